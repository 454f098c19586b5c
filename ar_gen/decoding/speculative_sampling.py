"""Draft-and-verify sampling for causal (one token per step, KV-cached) models: a small draft model proposes a window
of `gamma` tokens one step at a time, the target scores the window in one call of its step over gamma + 1
positions, and `ar_gen.decoding.speculative`'s rule keeps each draft or replaces it; the window is truncated at the
first rejection. The result is distributed exactly as the target's own sampling (guidance, temperature, top-k and
top-p included: both models are judged on the distributions they would sample from).

Both models implement the sampler's step contract (`ar_gen.decoding.driver.Steps`) with two extras the causal
models have: `begin(cond, spare_slots=n)` (a cache with room for a window that runs past the end) and `step` over
l consecutive positions. The batch advances together: every row commits the same number of tokens, the smallest
accepted prefix of the batch plus one (that row's resampled token, or the target's own token after a fully
accepted window). Stopping a row earlier than its own first rejection keeps it exact (the stop does not depend
on that row's later tokens) but costs acceptance at large batch; `SpeculativeStats` counts what happened.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ar_gen.decoding.logits import SamplingConfig, combine_guidance, filtered_log_probs, guidance_scale
from ar_gen.decoding.speculative import categorical_speculative, first_rejection

NUM_BANDS = 4  # acceptance is reported per quarter of the sequence


class SpeculativeStats(NamedTuple):
  """Counts of one sampling call: rounds (= target calls), draft_calls, drafted and accepted draft tokens per
  position band [NUM_BANDS], fallbacks (continuous rule only)."""

  rounds: jax.Array
  draft_calls: jax.Array
  drafted_K: jax.Array
  accepted_K: jax.Array
  fallbacks: jax.Array


class _State(NamedTuple):
  tokens: jax.Array  # [B, L + gamma + 1]
  pos: jax.Array  # tokens committed so far (every row)
  target_carry: Any
  target_cache: Any
  draft_carry: Any
  draft_cache: Any
  stats: SpeculativeStats


def _double(x: jax.Array, guided: bool) -> jax.Array:
  return jnp.concatenate([x, x]) if guided else x


def _log_probs(logits_BlV: jax.Array, cfg: SamplingConfig, positions_l: jax.Array, num_tokens: int) -> jax.Array:
  """The distributions plain sampling draws from at these positions [B, l, V] (guidance combined first)."""
  if cfg.guided:
    b = logits_BlV.shape[0] // 2
    scale_l = jax.vmap(lambda p: guidance_scale(cfg, p, num_tokens))(positions_l)
    logits_BlV = combine_guidance(logits_BlV[:b], logits_BlV[b:], scale_l[None, :, None])
  b, l, v = logits_BlV.shape
  return filtered_log_probs(logits_BlV.reshape(b * l, v), cfg).reshape(b, l, v)


def sample(target: Any, draft: Any, cond: Any, rng: jax.Array, cfg: SamplingConfig,
           gamma: int) -> tuple[jax.Array, SpeculativeStats]:
  """Token ids [B, L] of `target.layout` by draft-and-verify with windows of `gamma` drafts (trace under jit)."""
  if gamma < 1:
    raise ValueError(f"gamma (drafts per window) must be at least 1, got {gamma}")
  if target.layout.kind != "ids" or target.layout.token_shape() != draft.layout.token_shape():
    raise ValueError(f"draft and target need the same token ids layout; target {target.layout.describe()}, "
                     f"draft {draft.layout.describe()}")
  num_tokens, guided = target.layout.num_tokens, cfg.guided
  if guided:
    cond = jax.tree.map(lambda c, n: jnp.concatenate([c, n]), cond, target.null_condition(cond))
  spare = gamma + 1
  _, t_carry, t_cache = target.begin(cond, spare_slots=spare)
  _, d_carry, d_cache = draft.begin(cond, spare_slots=spare)
  b = jax.tree.leaves(cond)[0].shape[0] // (2 if guided else 1)
  zeros_K = jnp.zeros((NUM_BANDS,), jnp.int32)
  stats = SpeculativeStats(jnp.int32(0), jnp.int32(0), zeros_K, zeros_K, jnp.int32(0))
  state = _State(jnp.zeros((b, num_tokens + spare), jnp.int32), jnp.int32(0), t_carry, t_cache, d_carry, d_cache,
                 stats)

  def draft_window(state: _State):
    """gamma drafts and their distributions, and one more step that puts the last draft into the draft's cache
    (needed when the whole window is accepted; its own draft is never used)."""
    draft_key = jax.random.fold_in(jax.random.fold_in(rng, 1), state.stats.rounds)

    def one(carry, j):
      d_carry, d_cache = carry
      position = state.pos + j
      logits, d_cache = draft.step(d_carry, position, d_cache, None)
      log_q_BV = _log_probs(logits, cfg, position[None], num_tokens)[:, 0]
      token_B = jax.random.categorical(jax.random.fold_in(draft_key, j), log_q_BV)
      d_carry = draft.feed(_double(token_B[:, None], guided), position, d_carry, None)
      return (d_carry, d_cache), (token_B, log_q_BV)

    (d_carry, d_cache), (tokens_GB, log_q_GBV) = jax.lax.scan(one, (state.draft_carry, state.draft_cache),
                                                               jnp.arange(gamma + 1))
    return d_carry, d_cache, tokens_GB[:gamma].T, jnp.swapaxes(log_q_GBV[:gamma], 0, 1)

  def round_(state: _State) -> _State:
    d_carry, d_cache, drafts_BG, log_q_BGV = draft_window(state)
    inputs = jnp.concatenate([state.target_carry, target.feed(_double(drafts_BG, guided), state.pos,
                                                              state.target_carry, None)], axis=1)
    logits, t_cache = target.step(inputs, state.pos, state.target_cache, None)  # tokens pos .. pos + gamma
    positions = state.pos + jnp.arange(gamma + 1)
    log_p_BJV = _log_probs(logits, cfg, positions, num_tokens)
    key = jax.random.fold_in(jax.random.fold_in(rng, 2), state.stats.rounds)
    v = log_p_BJV.shape[-1]
    judged = categorical_speculative(key, drafts_BG.reshape(-1), log_p_BJV[:, :gamma].reshape(-1, v),
                                     log_q_BGV.reshape(-1, v))
    accepted_BG, replaced_BG = judged.accepted.reshape(b, gamma), judged.tokens.reshape(b, gamma)
    bonus_B = jax.random.categorical(jax.random.fold_in(key, 1), log_p_BJV[:, gamma])
    stop = jnp.minimum(jnp.min(first_rejection(accepted_BG)), num_tokens - 1 - state.pos)  # last committed index
    window_BJ = jnp.concatenate([jnp.where(jnp.arange(gamma) < stop, drafts_BG, replaced_BG), bonus_B[:, None]], 1)
    window_BJ = jnp.where(jnp.arange(gamma + 1) <= stop, window_BJ, 0)
    tokens = jax.lax.dynamic_update_slice_in_dim(state.tokens, window_BJ, state.pos, axis=1)
    committed = stop + 1
    last_B1 = jax.lax.dynamic_slice_in_dim(window_BJ, stop, 1, axis=1)
    t_carry = target.feed(_double(last_B1, guided), state.pos + stop, state.target_carry, None)
    d_carry = draft.feed(_double(last_B1, guided), state.pos + stop, d_carry, None)
    # the draft's cache holds the window's drafts; the next round re-feeds from pos + committed, overwriting them
    band_G = jnp.minimum(positions[:gamma] * NUM_BANDS // num_tokens, NUM_BANDS - 1)
    judged_G = jnp.arange(gamma) <= jnp.minimum(stop, gamma - 1)  # drafts up to the stop were judged
    drafted = jnp.zeros((NUM_BANDS,), jnp.int32).at[band_G].add(b * judged_G.astype(jnp.int32))
    accepted = jnp.zeros((NUM_BANDS,), jnp.int32).at[band_G].add(
        jnp.sum(accepted_BG & judged_G, axis=0).astype(jnp.int32))
    s = state.stats
    stats = SpeculativeStats(s.rounds + 1, s.draft_calls + gamma + 1, s.drafted_K + drafted, s.accepted_K + accepted,
                             s.fallbacks + jnp.sum(judged.fell_back).astype(jnp.int32))
    return _State(tokens, state.pos + committed, t_carry, t_cache, d_carry, d_cache, stats)

  state = jax.lax.while_loop(lambda s: s.pos < num_tokens, round_, state)
  return state.tokens[:, :num_tokens], state.stats
