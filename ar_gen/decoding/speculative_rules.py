"""The acceptance rules of draft-and-verify sampling (`ar_gen.decoding.speculative_sampling`): how each model's
outputs become tokens and their distributions, and how a window of drafts is judged against the target's.

- `CategoricalRule(cfg)`: token ids; both models judged on the distributions they would sample from (guidance,
  temperature, top-k, top-p). Exact: the result is distributed as the target's own sampling.
- `DiffusionRule(draft_head, target_head, cfg)`: token vectors of a diffusion head (continuous speculative decoding,
  CSpD). Both heads denoise a position from the same noise (trajectory alignment: the noise comes from the
  position's key, never stored), with noise on the last step too, and a draft is judged on the two last steps'
  Gaussians. `trajectory_factor=False` (default) is the exact rule given the trajectories; True multiplies the
  ratio by the paper's factor (approximate: docs/speculative.md). When a rejected token's residual proposals all
  fail, the token is the target's own aligned sample, and `fallbacks` counts it.

A rule's `propose(which, outputs, positions_l, num_tokens, keys_l)` gives (tokens, their distribution) of the draft
or the target at l positions from the model's step outputs (doubled by guidance); `judge(rng, drafts, q, p, own)`
the `StepResult` of the window (`ar_gen.decoding.speculative` holds the tests themselves).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ar_gen.decoding.heads import DiffusionHead
from ar_gen.decoding.logits import SamplingConfig, combine_guidance, filtered_log_probs, guidance_scale
from ar_gen.decoding.speculative import Gaussian, StepResult, categorical_speculative, gaussian_speculative


def _scales(cfg: SamplingConfig, positions_l: jax.Array, num_tokens: int) -> jax.Array:
  return jax.vmap(lambda p: guidance_scale(cfg, p, num_tokens))(positions_l)


@dataclasses.dataclass(frozen=True)
class CategoricalRule:
  """Token ids from logits [B(x2 guided), l, V]; a proposal's distribution is its log-probabilities [B, l, V]."""

  cfg: SamplingConfig
  token_shape: tuple[int, ...] = ()

  def propose(self, which: str, logits_BlV: jax.Array, positions_l: jax.Array, num_tokens: int,
              keys_l: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(tokens [B, l], their distribution) of the draft or target at these positions."""
    del which
    if self.cfg.guided:
      b = logits_BlV.shape[0] // 2
      scale_l = _scales(self.cfg, positions_l, num_tokens)
      logits_BlV = combine_guidance(logits_BlV[:b], logits_BlV[b:], scale_l[None, :, None])
    b, l, v = logits_BlV.shape
    log_p_BlV = filtered_log_probs(logits_BlV.reshape(b * l, v), self.cfg).reshape(b, l, v)
    tokens_lB = jax.vmap(lambda k, lp: jax.random.categorical(k, lp), in_axes=(0, 1))(keys_l, log_p_BlV)
    return tokens_lB.T, log_p_BlV

  def judge(self, rng: jax.Array, drafts_BG: jax.Array, draft_dist: jax.Array, target_dist: jax.Array,
            own_BG: jax.Array) -> StepResult:
    del own_BG
    b, g, v = draft_dist.shape
    out = categorical_speculative(rng, drafts_BG.reshape(-1), target_dist.reshape(-1, v), draft_dist.reshape(-1, v))
    return StepResult(*(x.reshape(b, g) for x in out))


class _Last(NamedTuple):
  mean: jax.Array  # [B, l, D]
  log_std: jax.Array  # [B, l, D], the temperature included
  path_log_std: jax.Array  # [B, l]


@dataclasses.dataclass(frozen=True)
class DiffusionRule:
  """Token vectors of each model's diffusion head from its z [B(x2 guided), l, C]; a proposal's distribution is
  its last reverse step's Gaussian (`_Last`)."""

  draft_head: DiffusionHead
  target_head: DiffusionHead
  cfg: SamplingConfig
  trajectory_factor: bool = False
  num_proposals: int = 16

  def __post_init__(self):
    d, t = self.draft_head, self.target_head
    if self.cfg.temperature <= 0 or d.temperature <= 0 or t.temperature <= 0:
      raise ValueError("continuous speculative decoding needs a temperature > 0 (at 0 the last step is a point "
                       "and no draft can be judged)")
    same = (d.diffusion.num_steps == t.diffusion.num_steps
            and np.array_equal(d.diffusion.timestep_map, t.diffusion.timestep_map)
            and d.temperature == t.temperature and d.net.token_dim == t.net.token_dim)
    if not same:
      raise ValueError(f"the draft's and the target's heads must sample alike to be aligned (steps, timesteps, "
                       f"temperature, token width): draft {d.diffusion.num_steps} steps, temperature "
                       f"{d.temperature}, {d.net.token_dim} dims; target {t.diffusion.num_steps} steps, "
                       f"temperature {t.temperature}, {t.net.token_dim} dims")

  @property
  def token_shape(self) -> tuple[int, ...]:
    return (self.target_head.net.token_dim,)

  def propose(self, which: str, z_BlC: jax.Array, positions_l: jax.Array, num_tokens: int,
              keys_l: jax.Array) -> tuple[jax.Array, _Last]:
    head = self.draft_head if which == "draft" else self.target_head
    uncond = None
    if self.cfg.guided:
      b = z_BlC.shape[0] // 2
      z_BlC, uncond = z_BlC[:b], z_BlC[b:]
    b, l, _ = z_BlC.shape
    scale = jnp.tile(_scales(self.cfg, positions_l, num_tokens), b)[:, None]  # [B l, 1], rows in (b, l) order

    def one_position(z_B1C, u_B1C, scale_B1, key):
      return head.last_step(z_B1C, u_B1C, scale_B1, key)

    # each position's noise from its own key, the same for both models (trajectory alignment)
    per = [one_position(z_BlC[:, j:j + 1], None if uncond is None else uncond[:, j:j + 1],
                        scale.reshape(b, l)[:, j:j + 1], keys_l[j]) for j in range(l)]
    mean = jnp.stack([p.mean for p in per], 1)
    log_std = jnp.stack([p.log_std for p in per], 1) + jnp.log(head.temperature)
    path = jnp.stack([p.path_log_std for p in per], 1)
    eps_lBD = jnp.stack([jax.random.normal(jax.random.fold_in(k, 7), mean[:, 0].shape) for k in keys_l])
    tokens = mean + jnp.exp(log_std) * jnp.swapaxes(eps_lBD, 0, 1)
    return tokens, _Last(mean, log_std, path)

  def judge(self, rng: jax.Array, drafts_BGD: jax.Array, draft_dist: _Last, target_dist: _Last,
            own_BGD: jax.Array) -> StepResult:
    b, g, d = drafts_BGD.shape
    flat = lambda x: x.reshape(b * g, *x.shape[2:])
    log_sigma = flat(draft_dist.path_log_std - target_dist.path_log_std) if self.trajectory_factor else 0.0
    out = gaussian_speculative(rng, flat(drafts_BGD), Gaussian(flat(target_dist.mean), flat(target_dist.log_std)),
                               Gaussian(flat(draft_dist.mean), flat(draft_dist.log_std)), flat(own_BGD),
                               num_proposals=self.num_proposals, log_sigma_N=log_sigma)
    return StepResult(out.tokens.reshape(b, g, d), out.accepted.reshape(b, g), out.fell_back.reshape(b, g))
