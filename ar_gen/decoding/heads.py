"""Sampler heads: what turns one AR step's outputs into tokens (`ar_gen.decoding.driver.Head`).

`CategoricalHead`: logits [B, l, V] of a discrete layout, guidance combined on the logits
(uncond + scale * (cond - uncond)), then temperature, top-k and top-p (`ar_gen.decoding.logits`), one draw per
token. A continuous layout's head (a per-token diffusion model) takes the same call and guides its noise prediction.
"""

from __future__ import annotations

import dataclasses

import jax

from ar_gen.decoding.logits import SamplingConfig, combine_guidance, sample_logits


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
