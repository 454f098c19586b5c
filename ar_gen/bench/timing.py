"""Timing helpers for the benchmarks: compile first, then time calls until enough wall time has passed."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax


def compiled(fn: Callable, *args) -> Callable:
  """`fn` jitted and compiled ahead of time for `args` (no warm-up execution needed)."""
  return jax.jit(fn).lower(*args).compile()


def seconds_per_call(fn: Callable[[], Any], min_seconds: float = 1.0, min_calls: int = 3,
                     max_calls: int = 1000, long_calls_once: bool = True) -> float:
  """Median wall seconds of `fn()` (its result blocked on) over at least `min_calls` calls and `min_seconds`.

  The first call pays for allocation and is discarded, unless it alone took `min_seconds` and `long_calls_once`
  (then it is the measurement: long calls are not repeated).
  """
  t = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t
  if long_calls_once and min_seconds > 0 and first >= min_seconds:
    return first
  times, start = [], time.perf_counter()
  while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() - start < min_seconds):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def peak_memory_gib() -> float | None:
  """The device's peak memory in use so far in this process (GiB); None where the backend keeps no count (CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2 ** 30
