"""Sampling as users sample, timed end to end and set against the machine's limit (`ar_gen.bench.roofline`).

A `Workload` is a family's sampler step contract with random weights, its sampling settings (guidance doubles the
rows of every step, as it does when users sample) and optionally a decoder from tokens to images. `measure` times
one jitted call (tokens, then images) and computes the least time this machine needs for the same work:

  per AR step k:  max(flops_k / matmul rate, (weight bytes + KV cache bytes seen by step k) / read bandwidth)
  decode:         decoder flops / matmul rate

flops come from XLA's cost analysis of the sampler's program (a token loop's body counted once per step: XLA
counts a while loop's body once, so the tokens' flops are scaled by the steps it stands for), split over the steps
in proportion to their tokens; weight bytes are the step contract's parameters other than embedding tables (a step
reads a few rows of those), KV cache bytes the cache's share up to the step's last slot. The fraction reported is
limit / measured: 1 would mean no time lost anywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from ar_gen.bench import timing
from ar_gen.bench.roofline import Roofline
from ar_gen.decoding import driver
from ar_gen.decoding.heads import CategoricalHead
from ar_gen.decoding.logits import SamplingConfig


@dataclasses.dataclass(frozen=True)
class Workload:
  name: str
  steps: Any  # a driver.Steps (an nnx.Module)
  cfg: SamplingConfig
  num_classes: int
  decoder: nnx.Module | None = None  # tokens [B, L] -> images, called as decode(decoder, tokens)
  decode: Callable[[Any, jax.Array], jax.Array] | None = None
  sampler: Callable[..., jax.Array] | None = None  # sampler(steps, labels_B, rng, cfg); None: categorical
  with_limit: bool = True  # False: the sampler's flops cannot be counted (an inner loop), no limit reported
  diffusion_steps: int = 0  # a diffusion head's steps per token, for the table


def categorical_sampler(steps: Any, labels_B: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """Token ids through the driver with the categorical head, conditioned on class labels."""
  return driver.sample(steps, CategoricalHead(cfg), {"label": labels_B}, rng, cfg)


def _flops(lowered) -> float:
  analysis = lowered.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0))


def _memory_gib(compiled) -> float | None:
  """Arguments + outputs + temporaries of the compiled sampler (XLA's memory analysis), GiB."""
  try:
    m = compiled.memory_analysis()
  except (AttributeError, NotImplementedError, RuntimeError):
    return None
  if m is None:
    return None
  total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
  return total / 2 ** 30


def weight_bytes(module: nnx.Module) -> int:
  """Bytes of the parameters a step reads in full (embedding tables excluded)."""
  total = 0
  for path, leaf in nnx.to_flat_state(nnx.state(module, nnx.Param)):
    if str(path[-1]) != "embedding":
      total += leaf.value.size * leaf.value.dtype.itemsize
  return total


def cache_bytes(steps: Any, cond: Any, rng: jax.Array, cfg: SamplingConfig) -> tuple[int, int]:
  """(bytes of the KV cache's keys and values, its slots: the layout's tokens, rounded up for a Pallas kernel)."""
  state, _ = jax.eval_shape(lambda c, r: driver.begin(steps, c, r, cfg), cond, rng)
  kv = [x for x in jax.tree.leaves(state.cache) if x.ndim == 4]  # [B, K, S, D] per layer
  return sum(x.size * x.dtype.itemsize for x in kv), (kv[0].shape[2] if kv else steps.layout.num_tokens)


def limit_seconds(roof: Roofline, steps: Any, token_flops: float, weights: int, cache: int,
                  decode_flops: float = 0.0, cache_slots: int | None = None) -> float:
  layout = steps.layout
  seconds = 0.0
  for start, size in zip(layout.group_starts, layout.group_sizes):
    seen = (start + size) / (cache_slots or layout.num_tokens)
    seconds += roof.step_seconds(token_flops * size / layout.num_tokens, weights + cache * seen)
  return seconds + decode_flops / roof.matmul_flops_per_s


def measure(work: Workload, batch: int, roof: Roofline, min_seconds: float) -> dict:
  """Tokens/s, images/s, the machine's limit and the fraction of it reached, sampling `batch` images."""
  cfg, steps = work.cfg, work.steps
  graphdef, state = nnx.split(steps)
  dec_graphdef, dec_state = nnx.split(work.decoder) if work.decoder is not None else (None, None)
  labels_B = jnp.arange(batch, dtype=jnp.int32) % work.num_classes
  rng = jax.random.PRNGKey(0)

  sampler = work.sampler or categorical_sampler

  def tokens(state, labels_B, rng):
    return sampler(nnx.merge(graphdef, state), labels_B, rng, cfg)

  def generate(state, dec_state, labels_B, rng):
    tokens_BL = tokens(state, labels_B, rng)
    if dec_graphdef is None:
      return tokens_BL
    return work.decode(nnx.merge(dec_graphdef, dec_state), tokens_BL)

  fn = timing.compiled(generate, state, dec_state, labels_B, rng)
  seconds = timing.seconds_per_call(lambda: fn(state, dec_state, labels_B, rng), min_seconds, min_calls=1)

  num_steps = len(driver.steps_schedule(steps).sizes)
  result = {"workload": work.name, "batch": batch, "guidance": cfg.cfg_scale if cfg.guided else None,
            "seconds": seconds, "images_per_s": batch / seconds, "steps": num_steps,
            "diffusion_steps": work.diffusion_steps or None,
            "tokens_per_s": batch * steps.layout.num_tokens / seconds, "memory_gib": _memory_gib(fn)}
  if not work.with_limit:
    return {**result, "limit_seconds": None, "fraction_of_limit": None, "gflops": None}
  token_flops = _flops(jax.jit(tokens).lower(state, labels_B, rng))
  if steps.layout.group_by == "token":  # the peeled first step + the loop body counted once = two steps
    token_flops *= steps.layout.num_groups / 2
  decode_flops = 0.0
  if dec_graphdef is not None:
    tokens_BL = jax.ShapeDtypeStruct((batch, steps.layout.num_tokens), jnp.int32)
    decode_flops = _flops(jax.jit(lambda d, t: work.decode(nnx.merge(dec_graphdef, d), t))
                          .lower(dec_state, tokens_BL))
  cache, slots = cache_bytes(steps, {"label": labels_B}, rng, cfg)
  limit = limit_seconds(roof, steps, token_flops, weight_bytes(steps), cache, decode_flops, slots)
  return {**result, "limit_seconds": limit, "fraction_of_limit": limit / seconds,
          "gflops": (token_flops + decode_flops) / 1e9}
