"""`ar-gen bench roofline`: this machine's two limits for sampling, measured in one run.

matmul rate: fp32 FLOP/s of a jitted 2048 x 2048 x 2048 matrix product (8192 on an accelerator, where a smaller
one is mostly dispatch): the best a transformer's or a convolution's arithmetic can do here. weight-read bandwidth: bytes/s of matrix-vector products over weights far
larger than any cache (`--read-mib` in all, 4 matrices read one after another): what a decode step does when it
reads every weight once for a few rows.

`limit_seconds` turns a workload into the time it cannot beat on this machine: the sum over its AR steps of the
larger of its arithmetic at the matmul rate and its weight (and KV cache) reads at the bandwidth. `ar-gen bench
sample` divides that by the measured time: the fraction of the machine's limit a sampler reaches.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp

from ar_gen.bench import timing

MATMUL_SIZE = 2048


@dataclasses.dataclass(frozen=True)
class Roofline:
  matmul_flops_per_s: float
  read_bytes_per_s: float
  device: str

  def step_seconds(self, flops: float, read_bytes: float) -> float:
    """The least time of one step doing `flops` and reading `read_bytes` (the slower of the two limits)."""
    return max(flops / self.matmul_flops_per_s, read_bytes / self.read_bytes_per_s)


def matmul_flops_per_s(min_seconds: float) -> float:
  n = MATMUL_SIZE if jax.default_backend() == "cpu" else 4 * MATMUL_SIZE  # an accelerator needs a larger product
  a_NN, b_NN = jax.block_until_ready([jax.random.normal(jax.random.PRNGKey(i), (n, n), jnp.float32)
                                      for i in range(2)])
  fn = timing.compiled(lambda a, b: a @ b, a_NN, b_NN)
  return 2 * n ** 3 / timing.seconds_per_call(lambda: fn(a_NN, b_NN), min_seconds, min_calls=5,
                                              long_calls_once=False)


def read_bytes_per_s(min_seconds: float, read_mib: int = 512) -> float:
  rows = 8192
  cols = max(read_mib * 2 ** 20 // (4 * 4 * rows), 1)
  weights = jax.block_until_ready([jax.random.normal(jax.random.PRNGKey(i), (rows, cols), jnp.float32)
                                    for i in range(4)])
  x_1R = jax.random.normal(jax.random.PRNGKey(9), (1, rows), jnp.float32)

  def read_all(x_1R, weights):
    return [x_1R @ w for w in weights]

  fn = timing.compiled(read_all, x_1R, weights)
  seconds = timing.seconds_per_call(lambda: fn(x_1R, weights), min_seconds, min_calls=5, long_calls_once=False)
  return sum(w.size * 4 for w in weights) / seconds


def measure(min_seconds: float = 1.0, read_mib: int = 512) -> Roofline:
  return Roofline(matmul_flops_per_s(min_seconds), read_bytes_per_s(min_seconds, read_mib),
                  f"{jax.devices()[0].device_kind} x {jax.device_count()}")


def describe(roof: Roofline) -> str:
  return (f"roofline ({roof.device}): fp32 matmul {roof.matmul_flops_per_s / 1e9:.0f} GFLOP/s, "
          f"weight reads {roof.read_bytes_per_s / 1e9:.1f} GB/s")


def run(min_seconds: float = 1.0, read_mib: int = 512, out: str | None = None) -> Roofline:
  if read_mib < 1:
    raise ValueError(f"--read-mib must be >= 1, got {read_mib}")
  roof = measure(min_seconds, read_mib)
  print(describe(roof))
  if out:
    with open(out, "w") as f:
      json.dump(dataclasses.asdict(roof), f, indent=2)
  return roof
