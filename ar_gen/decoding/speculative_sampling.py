"""Draft-and-verify sampling for causal (one token per step, KV-cached) models: drafts of a window of `gamma`
tokens, scored by the target in one call of its step over gamma + 1 positions, kept or replaced by a rule
(`ar_gen.decoding.speculative_rules`), the window truncated at the first rejection.

Two sources of drafts, one verify-and-commit loop:
- `sample(target, draft, cond, rng, rule, gamma)`: a small draft model of the same layout proposes the window one
  step at a time (gamma + 1 draft steps a window: the last only puts the last draft into the draft's cache).
  With `CategoricalRule` the result is distributed as the target's own sampling; with `DiffusionRule` it is
  continuous speculative decoding (CSpD).
- `sample_jacobi(target, cond, rng, cfg, window)`: no draft model (speculative Jacobi decoding). The drafts of
  a window are the target's own tokens of the previous round, sampled from contexts that held earlier drafts,
  and their distribution is the one they were sampled from; positions never seen before start as uniform ids.
  Each round judges every draft of the window with the categorical rule: up to the stop the results are
  committed, after it the judged token (the draft itself if accepted, else a draw of norm(max(0, p - q))) is
  the next round's draft with distribution p. That is the maximal coupling of the old draft with the new
  distribution (MC-SJD, arXiv 2510.24211): a draft stays unless its distribution moved, where the original
  SJD (2410.01699) redraws it independently. Exact for the same reason as with a draft model: a draft is
  drawn from its recorded distribution given everything earlier positions' tests see.

`prefill=n` samples the first n tokens with the target alone (CSpD's pre-fill; the draft's cache then reads them
in one step). Both models implement the sampler's step contract (`ar_gen.decoding.driver.Steps`) with the causal
models' extras: `begin(cond, spare_slots=n)` (a cache with room for a window that runs past the end) and `step`
over l consecutive positions; on CPU they run on `few_rows_view` like the plain sampler. The batch advances
together: every row commits the same number of tokens, the smallest accepted prefix of the batch plus one (that
row's replaced token, or the target's own token after a fully accepted window). Stopping a row earlier than its
own first rejection keeps it exact (the stop depends on that row's tests up to the stop only) but costs
acceptance at large batch; `SpeculativeStats` counts what happened.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ar_gen.decoding.logits import SamplingConfig
from ar_gen.decoding.speculative import StepResult, first_rejection
from ar_gen.decoding.speculative_rules import CategoricalRule, DiffusionRule
from ar_gen.nn.few_rows import few_rows_view

NUM_BANDS = 4  # acceptance is reported per quarter of the sequence
PREFILL_KEY, ROUND_KEY, JUDGE_KEY, FRESH_KEY = 3, 1, 2, 4  # fold_in(rng, .) of each use of randomness


class SpeculativeStats(NamedTuple):
  """Counts of one sampling call: rounds (verifying target calls), prefill (target-only steps), draft_calls,
  drafted and accepted draft tokens per position band [NUM_BANDS], fallbacks (continuous rule only)."""

  rounds: jax.Array
  prefill: jax.Array
  draft_calls: jax.Array
  drafted_K: jax.Array
  accepted_K: jax.Array
  fallbacks: jax.Array


@dataclasses.dataclass(frozen=True)
class Speculation:
  """How a run samples speculatively (`ar-gen sample --gamma N --prefill R [--jacobi | --draft-workdir DIR]`):
  `gamma` drafts a window, the fraction `prefill` of the tokens the target samples alone first, and draft-free
  (`jacobi`) or with a draft model."""

  gamma: int = 4
  prefill: float = 0.0
  jacobi: bool = False

  def __post_init__(self):
    if self.gamma < 1:
      raise ValueError(f"--gamma (drafts per window) must be at least 1, got {self.gamma}")
    if not 0 <= self.prefill < 1:
      raise ValueError(f"--prefill (the fraction of tokens the target samples alone) must lie in [0, 1), got "
                       f"{self.prefill}")

  def prefill_tokens(self, num_tokens: int) -> int:
    return min(int(round(self.prefill * num_tokens)), num_tokens - 1)


def _band_start(k: int, num_tokens: int) -> int:
  """The first position p of band k: the least p with p * NUM_BANDS // num_tokens >= k (as `_count` bins)."""
  return -(-k * num_tokens // NUM_BANDS)


def summarize(stats: SpeculativeStats, num_calls: int, num_tokens: int) -> dict:
  """The numbers of `speculative.json` from stats summed over `num_calls` sampling calls of L tokens: acceptance
  overall and per position band, tokens committed per verifying target call, calls of each model, fallbacks, and
  the raw `counts` that `merge_summaries` adds up."""
  drafted, accepted = np.asarray(stats.drafted_K, np.int64), np.asarray(stats.accepted_K, np.int64)
  rounds, prefill = int(stats.rounds), int(stats.prefill)
  rate = lambda a, d: float(a / d) if d else None
  return {"acceptance": rate(accepted.sum(), drafted.sum()),
          "acceptance_per_band": [rate(a, d) for a, d in zip(accepted, drafted)],
          "bands": [f"tokens {_band_start(k, num_tokens)}-{_band_start(k + 1, num_tokens) - 1}"
                    for k in range(NUM_BANDS)],
          "drafted": int(drafted.sum()), "accepted": int(accepted.sum()),
          "tokens_per_round": rate(num_calls * num_tokens - prefill, rounds),
          "target_calls": rounds + prefill, "plain_target_calls": num_calls * num_tokens,
          "rounds": rounds, "prefill_steps": prefill, "draft_calls": int(stats.draft_calls),
          "fallbacks": int(stats.fallbacks),
          "counts": {"calls": num_calls, "num_tokens": num_tokens, "rounds": rounds, "prefill": prefill,
                     "draft_calls": int(stats.draft_calls), "drafted_K": drafted.tolist(),
                     "accepted_K": accepted.tolist(), "fallbacks": int(stats.fallbacks)}}


def merge_summaries(summaries: list[dict]) -> dict:
  """One `summarize` of the calls of several summaries (the shards of one sampling) from their raw counts."""
  counts = [s["counts"] for s in summaries]
  if len({c["num_tokens"] for c in counts}) != 1:
    raise ValueError(f"summaries of different sequence lengths: {sorted({c['num_tokens'] for c in counts})}")
  total = lambda k: np.sum([np.asarray(c[k]) for c in counts], axis=0)
  stats = SpeculativeStats(total("rounds"), total("prefill"), total("draft_calls"), total("drafted_K"),
                           total("accepted_K"), total("fallbacks"))
  return summarize(stats, int(total("calls")), counts[0]["num_tokens"])


class _Verified(NamedTuple):
  """One round's outcome: the committed tokens [B, gamma + 1] (zero after the stop), the last committed index,
  every draft's judged token, the target's own tokens and distributions at the gamma + 1 positions."""

  window: jax.Array
  stop: jax.Array
  judged: StepResult
  own: jax.Array
  p_dist: Any


class _State(NamedTuple):
  tokens: jax.Array  # [B, L + gamma + 1, *token_shape]
  pos: jax.Array  # tokens committed so far (every row)
  target_carry: Any
  target_cache: Any
  drafter: Any
  stats: SpeculativeStats


def _double(x: jax.Array, guided: bool) -> jax.Array:
  return jnp.concatenate([x, x]) if guided else x


def _along(mask_J: jax.Array, x: jax.Array) -> jax.Array:
  """`mask_J` broadcast over [B, J, *token_shape]."""
  return mask_J.reshape((1, -1) + (1,) * (x.ndim - 2))


def _position_keys(key: jax.Array, positions_J: jax.Array) -> jax.Array:
  return jax.vmap(lambda p: jax.random.fold_in(key, p))(positions_J)


class _ModelDrafter:
  """Drafts from a draft model; its state is (carry, cache)."""

  def __init__(self, model: Any, rule: Any, guided: bool, num_tokens: int):
    self.model, self.rule, self.guided, self.num_tokens = model, rule, guided, num_tokens

  def init(self, cond: Any, spare: int, b: int, rng: jax.Array) -> Any:
    del b, rng
    _, carry, cache = self.model.begin(cond, spare_slots=spare)
    return carry, cache

  def prefill(self, state: Any, prefix: jax.Array) -> Any:
    """The draft's cache reads the target's first n tokens [B, n] in one step."""
    carry, cache = state
    n = prefix.shape[1]
    inputs = jnp.concatenate([carry, self.model.feed(_double(prefix[:, :n - 1], self.guided), 0, carry, None)],
                             axis=1)
    _, cache = self.model.step(inputs, 0, cache, None)
    return self.model.feed(_double(prefix[:, n - 1:], self.guided), n - 1, carry, None), cache

  def draft(self, state: Any, pos: jax.Array, keys_J: jax.Array, round_: jax.Array) -> tuple[Any, Any, Any]:
    del round_
    gamma = keys_J.shape[0] - 1

    def one(carry, j):
      d_carry, d_cache = carry
      out, d_cache = self.model.step(d_carry, pos + j, d_cache, None)
      token, dist = self.rule.propose("draft", out, (pos + j)[None], self.num_tokens, keys_J[j][None])
      d_carry = self.model.feed(_double(token, self.guided), pos + j, d_carry, None)
      return (d_carry, d_cache), (token[:, 0], jax.tree.map(lambda x: x[:, 0], dist))

    state, (drafts_J, q_J) = jax.lax.scan(one, state, jnp.arange(gamma + 1))
    first = lambda x: jnp.swapaxes(x, 0, 1)[:, :gamma]
    return first(drafts_J), jax.tree.map(first, q_J), state

  def calls(self, gamma: int) -> int:
    return gamma + 1

  prefill_calls = 1  # the draft's cache reads the pre-filled tokens in one step

  def advance(self, state: Any, verified: _Verified, pos: jax.Array, rng: jax.Array, round_: jax.Array) -> Any:
    """Feeds the last committed token; the cache's window entries after it are overwritten by the next round."""
    del rng, round_
    carry, cache = state
    last = jax.lax.dynamic_slice_in_dim(verified.window, verified.stop, 1, axis=1)
    return self.model.feed(_double(last, self.guided), pos + verified.stop, carry, None), cache


class _JacobiDrafter:
  """Drafts from the target's previous round; its state is (drafts [B, W], their log-probabilities [B, W, V])."""

  def __init__(self, vocab_size: int, window: int):
    self.vocab_size, self.window = vocab_size, window

  def calls(self, gamma: int) -> int:
    del gamma
    return 0

  prefill_calls = 0

  def _fresh(self, rng: jax.Array, b: int, positions_J: jax.Array, r: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Uniform ids for positions no round has drafted yet (keys of round r; -1 before the first), and their
    (uniform) log-probabilities."""
    keys = _position_keys(jax.random.fold_in(jax.random.fold_in(rng, FRESH_KEY), r + 1), positions_J)
    ids_JB = jax.vmap(lambda k: jax.random.randint(k, (b,), 0, self.vocab_size))(keys)
    log_q = jnp.full((b, positions_J.shape[0], self.vocab_size), -jnp.log(float(self.vocab_size)))
    return ids_JB.T.astype(jnp.int32), log_q

  def init(self, cond: Any, spare: int, b: int, rng: jax.Array) -> Any:
    del cond, spare
    return self._fresh(rng, b, jnp.arange(self.window), jnp.int32(-1))

  def prefill(self, state: Any, prefix: jax.Array) -> Any:
    del prefix
    return state  # the first drafts are uniform wherever they start

  def draft(self, state: Any, pos: jax.Array, keys_J: jax.Array, round_: jax.Array) -> tuple[Any, Any, Any]:
    del pos, keys_J, round_
    drafts, log_q = state
    return drafts, log_q, state

  def advance(self, state: Any, verified: _Verified, pos: jax.Array, rng: jax.Array, round_: jax.Array) -> Any:
    """The window moved by stop + 1: judged tokens after the stop, the target's token after the window, then
    uniform ids."""
    del state
    w = self.window
    b = verified.own.shape[0]
    fresh, fresh_q = self._fresh(rng, b, pos + w + 1 + jnp.arange(w), round_)
    tokens = jnp.concatenate([verified.judged.tokens, verified.own[:, w:], fresh], axis=1)
    log_q = jnp.concatenate([verified.p_dist, fresh_q], axis=1)
    start = verified.stop + 1
    return (jax.lax.dynamic_slice_in_dim(tokens, start, w, axis=1),
            jax.lax.dynamic_slice_in_dim(log_q, start, w, axis=1))


def _verify(target: Any, rule: Any, state: _State, drafts: jax.Array, q_dist: Any, keys_J: jax.Array,
            judge_key: jax.Array, num_tokens: int, guided: bool, valid_B: jax.Array) -> tuple[_Verified, Any]:
  """The target's step over the window [carry, drafts]; the judged drafts; the committed tokens up to the stop
  (the first rejection of the real rows `valid_B`: rows that pad a batch never move it)."""
  gamma = drafts.shape[1]
  pos = state.pos
  inputs = jnp.concatenate([state.target_carry, target.feed(_double(drafts, guided), pos, state.target_carry,
                                                            None)], axis=1)
  out, cache = target.step(inputs, pos, state.target_cache, None)  # tokens pos .. pos + gamma
  own, p_dist = rule.propose("target", out, pos + jnp.arange(gamma + 1), num_tokens, keys_J)
  judged = rule.judge(judge_key, drafts, q_dist, jax.tree.map(lambda x: x[:, :gamma], p_dist), own[:, :gamma])
  stop_B = jnp.where(valid_B, first_rejection(judged.accepted), gamma)
  stop = jnp.minimum(jnp.min(stop_B), num_tokens - 1 - pos)  # last committed
  window = jnp.concatenate([jnp.where(_along(jnp.arange(gamma) < stop, drafts), drafts, judged.tokens),
                            own[:, gamma:]], axis=1)
  window = jnp.where(_along(jnp.arange(gamma + 1) <= stop, window), window, 0).astype(state.tokens.dtype)
  return _Verified(window, stop, judged, own, p_dist), cache


def _count(stats: SpeculativeStats, verified: _Verified, positions_G: jax.Array, num_tokens: int,
           draft_calls: int, valid_B: jax.Array) -> SpeculativeStats:
  """The round's counts over the real rows `valid_B`."""
  gamma = verified.judged.accepted.shape[1]
  b = jnp.sum(valid_B.astype(jnp.int32))
  band_G = jnp.minimum(positions_G * NUM_BANDS // num_tokens, NUM_BANDS - 1)
  judged_G = jnp.arange(gamma) <= jnp.minimum(verified.stop, gamma - 1)  # the drafts up to the stop were judged
  zeros_K = jnp.zeros_like(stats.drafted_K)
  drafted = zeros_K.at[band_G].add(b * judged_G.astype(jnp.int32))
  real_BG = judged_G[None] & valid_B[:, None]
  accepted = zeros_K.at[band_G].add(jnp.sum(verified.judged.accepted & real_BG, axis=0).astype(jnp.int32))
  fell = jnp.sum(verified.judged.fell_back & real_BG).astype(jnp.int32)
  return SpeculativeStats(stats.rounds + 1, stats.prefill, stats.draft_calls + draft_calls,
                          stats.drafted_K + drafted, stats.accepted_K + accepted, stats.fallbacks + fell)


def _prefill(target: Any, rule: Any, state: _State, n: int, rng: jax.Array, num_tokens: int,
             guided: bool) -> _State:
  """The first n tokens by the target alone, one step each (keys of `PREFILL_KEY` and the position)."""
  keys = _position_keys(jax.random.fold_in(rng, PREFILL_KEY), jnp.arange(n))

  def one(carry, i):
    t_carry, t_cache = carry
    out, t_cache = target.step(t_carry, i, t_cache, None)
    token, _ = rule.propose("target", out, i[None], num_tokens, keys[i][None])
    return (target.feed(_double(token, guided), i, t_carry, None), t_cache), token[:, 0]

  (t_carry, t_cache), prefix_n = jax.lax.scan(one, (state.target_carry, state.target_cache), jnp.arange(n))
  prefix = jnp.swapaxes(prefix_n, 0, 1).astype(state.tokens.dtype)
  return state._replace(tokens=jax.lax.dynamic_update_slice_in_dim(state.tokens, prefix, 0, axis=1),
                        pos=jnp.int32(n), target_carry=t_carry, target_cache=t_cache,
                        stats=state.stats._replace(prefill=jnp.int32(n)))


def _decode(target: Any, drafter: Any, cond: Any, rng: jax.Array, rule: Any, gamma: int,
            prefill: int, valid_B: jax.Array | None) -> tuple[jax.Array, SpeculativeStats]:
  num_tokens, guided = target.layout.num_tokens, rule.cfg.guided
  if gamma < 1:
    raise ValueError(f"gamma (drafts per window) must be at least 1, got {gamma}")
  if not 0 <= prefill < num_tokens:
    raise ValueError(f"prefill (tokens the target samples alone) must lie in [0, {num_tokens - 1}], got {prefill}")
  b = jax.tree.leaves(cond)[0].shape[0]
  valid_B = jnp.ones((b,), bool) if valid_B is None else jnp.asarray(valid_B, bool)
  if valid_B.shape != (b,):
    raise ValueError(f"valid_B (the real rows) must have shape ({b},), got {valid_B.shape}")
  if guided:
    cond = jax.tree.map(lambda c, n: jnp.concatenate([c, n]), cond, target.null_condition(cond))
  spare = gamma + 1
  _, t_carry, t_cache = target.begin(cond, spare_slots=spare)
  zeros_K = jnp.zeros((NUM_BANDS,), jnp.int32)
  stats = SpeculativeStats(jnp.int32(0), jnp.int32(0), jnp.int32(0), zeros_K, zeros_K, jnp.int32(0))
  dtype = jnp.float32 if rule.token_shape else jnp.int32
  state = _State(jnp.zeros((b, num_tokens + spare, *rule.token_shape), dtype), jnp.int32(0), t_carry, t_cache,
                 drafter.init(cond, spare, b, rng), stats)
  if prefill:
    state = _prefill(target, rule, state, prefill, rng, num_tokens, guided)
    state = state._replace(drafter=drafter.prefill(state.drafter, state.tokens[:, :prefill]),
                           stats=state.stats._replace(draft_calls=jnp.int32(drafter.prefill_calls)))

  def round_(state: _State) -> _State:
    r = state.stats.rounds
    positions_J = state.pos + jnp.arange(gamma + 1)
    keys_J = _position_keys(jax.random.fold_in(jax.random.fold_in(rng, ROUND_KEY), r), positions_J)
    drafts, q_dist, drafter_state = drafter.draft(state.drafter, state.pos, keys_J, r)
    judge_key = jax.random.fold_in(jax.random.fold_in(rng, JUDGE_KEY), r)
    verified, cache = _verify(target, rule, state._replace(drafter=drafter_state), drafts, q_dist, keys_J,
                              judge_key, num_tokens, guided, valid_B)
    tokens = jax.lax.dynamic_update_slice_in_dim(state.tokens, verified.window, state.pos, axis=1)
    last = jax.lax.dynamic_slice_in_dim(verified.window, verified.stop, 1, axis=1)
    t_carry = target.feed(_double(last, guided), state.pos + verified.stop, state.target_carry, None)
    drafter_state = drafter.advance(drafter_state, verified, state.pos, rng, r)
    stats = _count(state.stats, verified, positions_J[:gamma], num_tokens, drafter.calls(gamma), valid_B)
    return _State(tokens, state.pos + verified.stop + 1, t_carry, cache, drafter_state, stats)

  state = jax.lax.while_loop(lambda s: s.pos < num_tokens, round_, state)
  return state.tokens[:, :num_tokens], state.stats


def sample(target: Any, draft: Any, cond: Any, rng: jax.Array, rule: CategoricalRule | DiffusionRule,
           gamma: int, prefill: int = 0, valid_B: jax.Array | None = None) -> tuple[jax.Array, SpeculativeStats]:
  """Tokens [B, L(, D)] of `target.layout` by draft-and-verify with windows of `gamma` drafts of `draft` after
  `prefill` target-only tokens (trace under jit); `valid_B` (default all): the real rows, the others (padding)
  neither move the batch's stop nor count in the stats."""
  if target.layout != draft.layout:
    raise ValueError(f"draft and target need the same token layout; target {target.layout.describe()}, "
                     f"draft {draft.layout.describe()}")
  draft = few_rows_view(draft)
  drafter = _ModelDrafter(draft, rule, rule.cfg.guided, target.layout.num_tokens)
  return _decode(few_rows_view(target), drafter, cond, rng, rule, gamma, prefill, valid_B)


def sample_jacobi(target: Any, cond: Any, rng: jax.Array, cfg: SamplingConfig, window: int,
                  prefill: int = 0, valid_B: jax.Array | None = None) -> tuple[jax.Array, SpeculativeStats]:
  """Token ids [B, L] of `target.layout` by speculative Jacobi decoding over windows of `window` drafts, the
  drafts coupled across rounds (trace under jit); `valid_B` as for `sample`."""
  if target.layout.kind != "ids":
    raise ValueError(f"speculative Jacobi decoding needs token ids, got {target.layout.describe()}")
  drafter = _JacobiDrafter(target.layout.vocab_size, window)
  return _decode(few_rows_view(target), drafter, cond, rng, CategoricalRule(cfg), window, prefill, valid_B)
