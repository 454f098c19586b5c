"""The sampler loops: jitted pure functions over an explicit KV-cache pytree sized for the whole layout up front.

Next-token models: a step feeds one position and emits the next token, positions in a `lax.fori_loop`, so a step
costs the same at every position except for attention over the cache. Next-scale models: a step feeds all inputs
of one scale (group) and emits all its tokens; the K scales have different sizes, so the loop is unrolled, and the
next scale's inputs come from the tokenizer's quantizer (accumulated features, downsampled). With classifier-free
guidance the batch is doubled to [conditional; null class] and the two logits are combined; the scale at step k
of n follows `cfg_schedule` (`linear`: 1 + (cfg_scale - 1) k / (n - 1), which is VAR's ramp t = cfg k / (K - 1)
with VAR's cfg = cfg_scale - 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ar_gen.decoding.logits import SamplingConfig, combine_guidance, guidance_scale, sample_logits
from ar_gen.models.next_scale import NextScaleModel
from ar_gen.models.next_token import NextTokenModel
from tokenizers.multiscale import MultiScaleQuantizer


def sample_next_token(model: NextTokenModel, labels_B: jax.Array, rng: jax.Array,
                      cfg: SamplingConfig) -> jax.Array:
  """Token ids [B, N] for class labels [B] (trace under jit; deterministic for `rng`)."""
  n = model.num_tokens
  b = labels_B.shape[0]
  inputs = jnp.concatenate([labels_B, jnp.full_like(labels_B, model.num_classes)]) if cfg.guided else labels_B

  def emit(logits, step):
    if cfg.guided:
      logits = combine_guidance(logits[:b], logits[b:], guidance_scale(cfg, step, n))
    return sample_logits(logits, jax.random.fold_in(rng, step), cfg)

  logits, cache = model.step(inputs, 0, model.init_cache(inputs.shape[0]), is_class=True)
  tokens_BN = jnp.zeros((b, n), jnp.int32).at[:, 0].set(emit(logits, 0))

  def body(i, carry):
    tokens_BN, cache = carry
    prev = tokens_BN[:, i - 1]
    logits, cache = model.step(jnp.concatenate([prev, prev]) if cfg.guided else prev, i, cache, is_class=False)
    return tokens_BN.at[:, i].set(emit(logits, i)), cache

  tokens_BN, _ = jax.lax.fori_loop(1, n, body, (tokens_BN, cache))
  return tokens_BN


def sample_next_scale(model: NextScaleModel, quantizer: MultiScaleQuantizer, labels_B: jax.Array, rng: jax.Array,
                      cfg: SamplingConfig) -> jax.Array:
  """Token ids [B, L] (scale after scale) for class labels [B] (trace under jit; deterministic for `rng`)."""
  b, num_scales, side = labels_B.shape[0], len(model.scales), model.scales[-1]
  inputs = jnp.concatenate([labels_B, jnp.full_like(labels_B, model.num_classes)]) if cfg.guided else labels_B
  cond_BD = model.condition(inputs)
  cache = model.init_cache(inputs.shape[0])
  x_BlC = model.first_inputs(cond_BD)
  f_hat_BhwD = jnp.zeros((b, side, side, quantizer.code_dim), jnp.float32)
  tokens = []
  for k, p in enumerate(model.scales):
    logits_BlV, cache = model.step(x_BlC, k, cache, cond_BD)
    if cfg.guided:
      logits_BlV = combine_guidance(logits_BlV[:b], logits_BlV[b:], guidance_scale(cfg, k, num_scales))
    idx_Bl = sample_logits(logits_BlV.reshape(b * p * p, -1), jax.random.fold_in(rng, k), cfg).reshape(b, p * p)
    tokens.append(idx_Bl)
    if k + 1 < num_scales:
      f_hat_BhwD = quantizer.add_scale(f_hat_BhwD, k, idx_Bl.reshape(b, p, p))
      x_BlC = model.scale_inputs(quantizer.downsample(f_hat_BhwD, k + 1).reshape(b, -1, quantizer.code_dim), k + 1)
      x_BlC = jnp.concatenate([x_BlC, x_BlC]) if cfg.guided else x_BlC
  return jnp.concatenate(tokens, axis=1)
