"""Sampler heads: what turns one AR step's outputs into tokens (`ar_gen.decoding.driver.Head`).

`CategoricalHead`: logits [B, l, V] of a discrete layout, guidance combined on the logits
(uncond + scale * (cond - uncond)), then temperature, top-k and top-p (`ar_gen.decoding.logits`), one draw per
token. `DiffusionHead`: a continuous layout's (MAR's): every token vector is sampled by the respaced reverse
diffusion of a denoising network conditioned on the step's output z [B, l, C], guidance on its noise prediction
(`DenoisingMLP.guided`), the noise scaled by the temperature.
"""

from __future__ import annotations

import dataclasses

from typing import Any

import jax

from ar_gen.decoding.logits import SamplingConfig, combine_guidance, sample_logits
from ar_gen.nn.diffusion import GaussianDiffusion, LastStep


@dataclasses.dataclass(frozen=True)
class CategoricalHead:
  """Guided, filtered categorical sampling of token ids from logits [B, l, V]."""

  cfg: SamplingConfig

  def __call__(self, logits_BlV: jax.Array, uncond_BlV: jax.Array | None, scale: jax.Array,
               rng: jax.Array) -> jax.Array:
    if uncond_BlV is not None:
      logits_BlV = combine_guidance(logits_BlV, uncond_BlV, scale)
    b, l, v = logits_BlV.shape
    return sample_logits(logits_BlV.reshape(b * l, v), rng, self.cfg).reshape(b, l)


@dataclasses.dataclass(frozen=True)
class DiffusionHead:
  """Token vectors [B, l, D] from z [B, l, C] by `diffusion`'s reverse process with the network `net`
  (net(x, t, z) -> [eps, v]; net.guided(x, t, z, z_null, scale)); x_T and each step's noise from `rng`."""

  net: Any
  diffusion: GaussianDiffusion
  temperature: float = 1.0
  clip_x0: float = 0.0  # > 0: the predicted x_0 clipped to [-clip_x0, clip_x0] (`ar_gen.nn.diffusion`)

  def __call__(self, z_BlC: jax.Array, uncond_BlC: jax.Array | None, scale: jax.Array,
               rng: jax.Array) -> jax.Array:
    b, l, _ = z_BlC.shape
    return self.last_step(z_BlC, uncond_BlC, scale, rng).mean.reshape(b, l, -1)

  def last_step(self, z_BlC: jax.Array, uncond_BlC: jax.Array | None, scale: jax.Array,
                rng: jax.Array) -> LastStep:
    """The reverse process of every token down to its last step ([B l] rows; the mean is the token `__call__`
    returns, from the same `rng`)."""
    b, l, c = z_BlC.shape
    z_NC = z_BlC.reshape(b * l, c)
    if uncond_BlC is None:
      model_fn = lambda x, t: self.net(x, t, z_NC)
    else:
      u_NC = uncond_BlC.reshape(b * l, c)
      model_fn = lambda x, t: self.net.guided(x, t, z_NC, u_NC, scale)
    noise_key, loop_key = jax.random.split(rng)
    noise = jax.random.normal(noise_key, (b * l, self.net.token_dim), jax.numpy.float32)
    return self.diffusion.last_step(model_fn, noise, loop_key, self.temperature, self.clip_x0)
