"""The part every family over a continuous tokenizer's token vectors shares: the per-token diffusion loss and the
diffusion head of the sampler.

A family subclasses `ContinuousTokenTask` with `build` (its model, which owns the denoising network as `model.head`),
`conditioning` (teacher-forced z [B, L, C] and the loss weight of each token [B, L]) and `sample_tokens` (through the
one driver with `self.head(model, cfg)`). The loss is ADM's (MSE of eps + the variational bound with the mean
frozen, `ar_gen.nn.diffusion`) at `diffusion_batch_mul` independent timesteps per token, uniform in [0, T), averaged
over the weighted tokens (MAR's `forward_loss`). Sampling uses `sample.diffusion_steps` respaced steps of the same
cosine schedule and the sampling temperature on the noise (`sample.clip_x0` > 0 bounds the predicted x_0: see the
caveat in `ar_gen/nn/diffusion.py`). Tokens must be finite: NaN latents stop training with the
trainer's non-finite error; `ar-gen extract-tokens` refuses to write them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ar_gen.decoding.heads import DiffusionHead
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.families._discrete import FrozenTokenizerTask
from ar_gen.nn.diffusion import GaussianDiffusion


class ContinuousTokenTask(FrozenTokenizerTask):
  """Class-conditional generation of a frozen KL tokenizer's token vectors (subclass: build, conditioning,
  sample_tokens)."""

  token_kind = "vectors"

  def diffusion(self) -> GaussianDiffusion:
    return GaussianDiffusion.cosine(self.config.model.diffusion_train_steps)

  def head(self, model: nnx.Module, cfg: SamplingConfig) -> DiffusionHead:
    """The sampler's head: `model.head` over `sample.diffusion_steps` respaced steps, at the sampling temperature."""
    sample = self.config.sample
    return DiffusionHead(model.head, self.diffusion().respaced(str(sample.diffusion_steps)), cfg.temperature,
                         sample.clip_x0)

  def conditioning(self, model: nnx.Module, tokens_BLD: jax.Array, labels_B: jax.Array,
                   rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(z [B, L, C] that conditions each token's denoiser, loss weight of each token [B, L]) in training."""
    raise NotImplementedError

  def loss(self, model: nnx.Module, batch: dict, rng: jax.Array, step: jax.Array, frozen: Any):
    del step, frozen
    tokens_BLD = batch["tokens"].astype(jnp.float32)
    z_BLC, weight_BL = self.conditioning(model, tokens_BLD, batch["label"].astype(jnp.int32),
                                         jax.random.fold_in(rng, 0))
    b, n, d = tokens_BLD.shape
    mul = self.config.model.diffusion_batch_mul
    target_ND = jnp.tile(tokens_BLD.reshape(b * n, d), (mul, 1))
    z_NC = jnp.tile(z_BLC.reshape(b * n, -1), (mul, 1))
    weight_N = jnp.tile(weight_BL.reshape(b * n), mul)
    diffusion = self.diffusion()
    t_key, noise_key = jax.random.split(jax.random.fold_in(rng, 1))
    t_N = jax.random.randint(t_key, (b * n * mul,), 0, diffusion.num_steps)
    noise_ND = jax.random.normal(noise_key, target_ND.shape)
    per_N = diffusion.training_loss(lambda x, t: model.head(x, t, z_NC), target_ND, t_N, noise_ND)
    loss = jnp.sum(per_N * weight_N) / jnp.maximum(jnp.sum(weight_N), 1.0)
    return loss, {"token_std": jnp.std(tokens_BLD)}, None
