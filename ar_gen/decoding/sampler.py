"""The sampler loop: one jitted pure function over an explicit KV-cache pytree, positions in a `lax.fori_loop`.

For next-token models a step feeds one position and emits the next token; the cache is sized for the whole
layout up front, so a step costs the same at every position except for attention over the cache. With
classifier-free guidance the batch is doubled to [conditional; null class] and the two logits are combined.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ar_gen.decoding.logits import SamplingConfig, combine_guidance, guidance_scale, sample_logits
from ar_gen.models.next_token import NextTokenModel


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
