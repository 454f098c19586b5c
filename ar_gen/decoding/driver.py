"""The one sampler driver: every family's tokens come out of `sample(steps, head, cond, rng, cfg)`.

A family implements the step contract `Steps` (usually its model; next-scale composes its model with the
tokenizer's residual quantizer): `begin` turns the conditioning into a per-sequence context, the first group's
inputs (`carry`) and an empty KV cache sized for the whole layout; `step` feeds one group's inputs and returns its
outputs (e.g. logits [B, l, V]); `feed` turns the tokens just emitted into the next group's inputs. A `Head`
turns a group's outputs into tokens (categorical with temperature / top-k / top-p; a per-token diffusion head
takes the same call) and receives the conditional and the unconditional outputs separately, so guidance may act
on logits or inside the head (on a diffusion head's noise prediction).

Classifier-free guidance is written once, here: the batch is doubled to [conditional; null condition] (the
family's `null_condition`), the scale at step k of K follows `cfg_schedule` and `cfg_interval`
(`ar_gen.decoding.logits.guidance_scale`), and the tokens fed back are the conditional half's, repeated. Step k
draws its randomness from `fold_in(rng, k)`. On CPU the steps run on `few_rows_view(steps)` (products of few rows
from transposed weights: the same results up to the order of float additions). One-token groups
(`group_by="token"`: next-token) run in a `lax.fori_loop` after the first (peeled: its inputs come from the condition, not from tokens), with a traced group
index; map groups (next-scale, next-band) and a Steps' own `schedule` of unequal steps (MAR's masked steps) are
unrolled, so their steps may use the group as a Python int. The
loop's carry is a `SamplingState` pytree, nothing is hidden in modules. This package imports no concrete model
class (an import-linter contract).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from ar_gen.decoding.logits import SamplingConfig, guidance_scale
from ar_gen.layout import Schedule, TokenLayout, schedule_of
from ar_gen.nn.few_rows import few_rows_view


class Steps(Protocol):
  """The step contract of a family (see the module docstring)."""

  @property
  def layout(self) -> TokenLayout:
    """The layout the family generates."""

  def null_condition(self, cond: Any) -> Any:
    """`cond` with every entry replaced by its null value (the unconditional branch of guidance)."""

  def begin(self, cond: Any) -> tuple[Any, Any, Any]:
    """(context, inputs of group 0, empty cache) for a batch of conditions."""

  def step(self, carry: Any, group: jax.Array | int, cache: Any, context: Any) -> tuple[jax.Array, Any]:
    """Feeds group `group`'s inputs; (its outputs [B, l, ...], the updated cache)."""

  def feed(self, tokens: jax.Array, group: jax.Array | int, carry: Any, context: Any) -> Any:
    """The inputs of group `group + 1` from group `group`'s tokens [B, l(, D)] (and the previous carry)."""

  # optional: `schedule`, a `Schedule` of steps other than the layout's groups (MAR's masked steps); the driver
  # writes step k's tokens at the schedule's offsets, so they come out in step order.


class Head(Protocol):
  """Turns a group's outputs into tokens."""

  def __call__(self, outputs: jax.Array, uncond_outputs: jax.Array | None, scale: jax.Array,
               rng: jax.Array) -> jax.Array:
    """Tokens [B, l] (ids) or [B, l, D] (vectors); with guidance `uncond_outputs` is the null branch's."""


class SamplingState(NamedTuple):
  """What the decoding loop carries from step to step."""

  tokens: jax.Array  # [B, L] ids or [B, L, D] vectors, filled group by group
  cache: Any  # the KV cache pytree
  carry: Any  # the next group's inputs (family-defined pytree)
  step: jax.Array | int  # the next group's index
  rng: jax.Array  # the base key; step k uses fold_in(rng, k)


def _batch_size(cond: Any) -> int:
  return jax.tree.leaves(cond)[0].shape[0]


def _double(tree: Any) -> Any:
  return jax.tree.map(lambda x: jnp.concatenate([x, x]), tree)


def empty_tokens(layout: TokenLayout, batch: int) -> jax.Array:
  """A [B, L] (ids) or [B, L, D] (vectors) buffer of zeros."""
  dtype = jnp.int32 if layout.kind == "ids" else jnp.float32
  return jnp.zeros((batch, *layout.token_shape()), dtype)


def begin(steps: Steps, cond: Any, rng: jax.Array, cfg: SamplingConfig) -> tuple[SamplingState, Any]:
  """The initial state and context (the condition doubled with its null value when guided)."""
  if cfg.guided:
    cond = jax.tree.map(lambda c, n: jnp.concatenate([c, n]), cond, steps.null_condition(cond))
  context, carry, cache = steps.begin(cond)
  b = _batch_size(cond) // (2 if cfg.guided else 1)
  return SamplingState(empty_tokens(steps.layout, b), cache, carry, jnp.zeros((), jnp.int32), rng), context


def steps_schedule(steps: Steps) -> Schedule:
  """The steps the driver takes: the Steps' own `schedule`, or one per group of its layout."""
  return getattr(steps, "schedule", None) or schedule_of(steps.layout)


def advance(steps: Steps, head: Head, state: SamplingState, context: Any, group: jax.Array | int, start,
            size: int, cfg: SamplingConfig) -> SamplingState:
  """One AR step: group `group` (its tokens at [start, start + size)) from `state`."""
  schedule = steps_schedule(steps)
  outputs, cache = steps.step(state.carry, group, state.cache, context)
  b = state.tokens.shape[0]
  if cfg.guided:
    progress = None if schedule.progress is None else jnp.asarray(schedule.progress, jnp.float32)[group]
    scale = guidance_scale(cfg, group, len(schedule.sizes), progress)
    new = head(outputs[:b], outputs[b:], scale, jax.random.fold_in(state.rng, group))
  else:
    new = head(outputs, None, jnp.ones(()), jax.random.fold_in(state.rng, group))
  tokens = jax.lax.dynamic_update_slice_in_dim(state.tokens, new.astype(state.tokens.dtype), start, axis=1)
  carry = steps.feed(_double(new) if cfg.guided else new, group, state.carry, context)
  return SamplingState(tokens, cache, carry, jnp.asarray(group, jnp.int32) + 1, state.rng)


def sample(steps: Steps, head: Head, cond: Any, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """Tokens [B, L] (or [B, L, D]) of `steps.layout` for a batch of conditions (trace under jit)."""
  steps = few_rows_view(steps)  # on CPU, steps of few rows read transposed weights (ar_gen/nn/few_rows.py)
  state, context = begin(steps, cond, rng, cfg)
  sizes = steps_schedule(steps).sizes
  starts = [sum(sizes[:k]) for k in range(len(sizes))]
  state = advance(steps, head, state, context, 0, 0, sizes[0], cfg)
  if steps.layout.group_by == "token" and len(set(sizes)) == 1:  # equal one-token steps: a traced step index
    size = sizes[0]
    state = jax.lax.fori_loop(
        1, len(sizes), lambda k, s: advance(steps, head, s, context, k, k * size, size, cfg), state)
  else:
    for k in range(1, len(sizes)):
      state = advance(steps, head, state, context, k, starts[k], sizes[k], cfg)
  return state.tokens
