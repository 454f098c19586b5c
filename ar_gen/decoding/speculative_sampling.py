"""Draft-and-verify sampling for causal (one token per step, KV-cached) models: a small draft model proposes a window
of `gamma` tokens one step at a time, the target scores the window in one call of its step over gamma + 1
positions, and a rule keeps each draft or replaces it; the window is truncated at the first rejection.

Rules (`ar_gen.decoding.speculative` holds their acceptance tests):
- `CategoricalRule(cfg)`: token ids; both models judged on the distributions they would sample from (guidance,
  temperature, top-k, top-p). Exact: the result is distributed as the target's own sampling.
- `DiffusionRule(draft_head, target_head, cfg)`: token vectors of a diffusion head (continuous speculative decoding,
  CSpD). Both heads denoise a position from the same noise (trajectory alignment: the noise comes from the
  position's key, never stored), with noise on the last step too, and a draft is judged on the two last steps'
  Gaussians. `trajectory_factor=False` (default) is the exact rule given the trajectories; True multiplies the
  ratio by the paper's factor (approximate: docs/speculative.md). When a rejected token's residual proposals all
  fail, the token is the target's own aligned sample, and `fallbacks` counts it.

Both models implement the sampler's step contract (`ar_gen.decoding.driver.Steps`) with two extras the causal
models have: `begin(cond, spare_slots=n)` (a cache with room for a window that runs past the end) and `step` over
l consecutive positions. The batch advances together: every row commits the same number of tokens, the smallest
accepted prefix of the batch plus one (that row's replaced token, or the target's own token after a fully
accepted window). Stopping a row earlier than its own first rejection keeps it exact (the stop does not depend
on that row's later tokens) but costs acceptance at large batch; `SpeculativeStats` counts what happened.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ar_gen.decoding.heads import DiffusionHead
from ar_gen.decoding.logits import SamplingConfig, combine_guidance, filtered_log_probs, guidance_scale
from ar_gen.decoding.speculative import (Gaussian, StepResult, categorical_speculative, first_rejection,
                                         gaussian_speculative)

NUM_BANDS = 4  # acceptance is reported per quarter of the sequence


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


class SpeculativeStats(NamedTuple):
  """Counts of one sampling call: rounds (= target calls), draft_calls, drafted and accepted draft tokens per
  position band [NUM_BANDS], fallbacks (continuous rule only)."""

  rounds: jax.Array
  draft_calls: jax.Array
  drafted_K: jax.Array
  accepted_K: jax.Array
  fallbacks: jax.Array


class _State(NamedTuple):
  tokens: jax.Array  # [B, L + gamma + 1, *token_shape]
  pos: jax.Array  # tokens committed so far (every row)
  target_carry: Any
  target_cache: Any
  draft_carry: Any
  draft_cache: Any
  stats: SpeculativeStats


def _double(x: jax.Array, guided: bool) -> jax.Array:
  return jnp.concatenate([x, x]) if guided else x


def _along(mask_J: jax.Array, x: jax.Array) -> jax.Array:
  """`mask_J` broadcast over [B, J, *token_shape]."""
  return mask_J.reshape((1, -1) + (1,) * (x.ndim - 2))


def sample(target: Any, draft: Any, cond: Any, rng: jax.Array, rule: CategoricalRule | DiffusionRule,
           gamma: int) -> tuple[jax.Array, SpeculativeStats]:
  """Tokens [B, L(, D)] of `target.layout` by draft-and-verify with windows of `gamma` drafts (trace under jit)."""
  if gamma < 1:
    raise ValueError(f"gamma (drafts per window) must be at least 1, got {gamma}")
  if target.layout != draft.layout:
    raise ValueError(f"draft and target need the same token layout; target {target.layout.describe()}, "
                     f"draft {draft.layout.describe()}")
  num_tokens, guided = target.layout.num_tokens, rule.cfg.guided
  if guided:
    cond = jax.tree.map(lambda c, n: jnp.concatenate([c, n]), cond, target.null_condition(cond))
  spare = gamma + 1
  _, t_carry, t_cache = target.begin(cond, spare_slots=spare)
  _, d_carry, d_cache = draft.begin(cond, spare_slots=spare)
  b = jax.tree.leaves(cond)[0].shape[0] // (2 if guided else 1)
  dtype = jnp.float32 if rule.token_shape else jnp.int32
  zeros_K = jnp.zeros((NUM_BANDS,), jnp.int32)
  stats = SpeculativeStats(jnp.int32(0), jnp.int32(0), zeros_K, zeros_K, jnp.int32(0))
  state = _State(jnp.zeros((b, num_tokens + spare, *rule.token_shape), dtype), jnp.int32(0), t_carry, t_cache,
                 d_carry, d_cache, stats)

  def round_(state: _State) -> _State:
    round_key = jax.random.fold_in(jax.random.fold_in(rng, 1), state.stats.rounds)
    positions_J = state.pos + jnp.arange(gamma + 1)
    keys_J = jax.vmap(lambda p: jax.random.fold_in(round_key, p))(positions_J)  # shared by draft and target

    def draft_one(carry, j):
      """One draft step; the window runs gamma + 1 of them, the last only to put the last draft into the draft's
      cache (needed when the whole window is accepted; its own draft is never used)."""
      d_carry, d_cache = carry
      out, d_cache = draft.step(d_carry, state.pos + j, d_cache, None)
      token, dist = rule.propose("draft", out, positions_J[j][None], num_tokens, keys_J[j][None])
      d_carry = draft.feed(_double(token, guided), state.pos + j, d_carry, None)
      return (d_carry, d_cache), (token[:, 0], jax.tree.map(lambda x: x[:, 0], dist))

    (d_carry, d_cache), (drafts_J, q_J) = jax.lax.scan(draft_one, (state.draft_carry, state.draft_cache),
                                                       jnp.arange(gamma + 1))
    drafts = jnp.swapaxes(drafts_J, 0, 1)[:, :gamma]
    q_dist = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1)[:, :gamma], q_J)
    inputs = jnp.concatenate([state.target_carry, target.feed(_double(drafts, guided), state.pos,
                                                              state.target_carry, None)], axis=1)
    out, t_cache = target.step(inputs, state.pos, state.target_cache, None)  # tokens pos .. pos + gamma
    own, p_dist = rule.propose("target", out, positions_J, num_tokens, keys_J)
    judged = rule.judge(jax.random.fold_in(jax.random.fold_in(rng, 2), state.stats.rounds), drafts, q_dist,
                        jax.tree.map(lambda x: x[:, :gamma], p_dist), own[:, :gamma])
    stop = jnp.minimum(jnp.min(first_rejection(judged.accepted)), num_tokens - 1 - state.pos)  # last committed
    before_G = jnp.arange(gamma) < stop
    window = jnp.concatenate([jnp.where(_along(before_G, drafts), drafts, judged.tokens), own[:, gamma:]], axis=1)
    window = jnp.where(_along(jnp.arange(gamma + 1) <= stop, window), window, 0).astype(state.tokens.dtype)
    tokens = jax.lax.dynamic_update_slice_in_dim(state.tokens, window, state.pos, axis=1)
    last = jax.lax.dynamic_slice_in_dim(window, stop, 1, axis=1)
    t_carry = target.feed(_double(last, guided), state.pos + stop, state.target_carry, None)
    d_carry = draft.feed(_double(last, guided), state.pos + stop, d_carry, None)
    # the draft's cache holds the window's drafts; the next round re-feeds from pos + stop + 1, overwriting them
    band_G = jnp.minimum(positions_J[:gamma] * NUM_BANDS // num_tokens, NUM_BANDS - 1)
    judged_G = jnp.arange(gamma) <= jnp.minimum(stop, gamma - 1)  # the drafts up to the stop were judged
    drafted = zeros_K.at[band_G].add(b * judged_G.astype(jnp.int32))
    accepted = zeros_K.at[band_G].add(jnp.sum(judged.accepted & judged_G, axis=0).astype(jnp.int32))
    fell = jnp.sum(judged.fell_back & judged_G).astype(jnp.int32)
    s = state.stats
    stats = SpeculativeStats(s.rounds + 1, s.draft_calls + gamma + 1, s.drafted_K + drafted,
                             s.accepted_K + accepted, s.fallbacks + fell)
    return _State(tokens, state.pos + stop + 1, t_carry, t_cache, d_carry, d_cache, stats)

  state = jax.lax.while_loop(lambda s: s.pos < num_tokens, round_, state)
  return state.tokens[:, :num_tokens], state.stats
