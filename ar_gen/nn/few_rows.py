"""Matrix products of a few rows on CPU: a sampling view of a module whose linear layers read their weights
transposed.

An AR sampling step multiplies a few rows (the batch, doubled by guidance; a small scale's tokens) by every weight
matrix. XLA:CPU's product x[M, K] @ W[K, N] reads W at a quarter of the machine's bandwidth when M is small
(measured 2026-12 on the 2-core CPU: 4-13 GB/s for M = 2..32 against 20 GB/s; `docs/benchmarks.md`), while the
same product written as W^T[N, K] . x^T with W^T stored contiguously streams W at 12-21 GB/s. `few_rows_view`
returns a copy of a module (the same arrays, never the caller's objects) in which every `nnx.Linear` computes
products of at most `max_rows` rows that way, from a transposed copy of its kernel made once per call of the
enclosing jitted function (before the decoding loop, so a step does not pay it). Results equal the plain product
up to the order of float additions. On other backends the module is returned as is.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

MAX_ROWS = 64  # measured: faster for 2..64 rows, equal at 72-128, slower for the head at 1360


class _FewRowsDot:
  """`lax.dot_general` for `nnx.Linear`'s x[..., K] @ kernel[K, N]; products of few rows from kernel^T."""

  def __init__(self, kernel_NK: jax.Array, max_rows: int):
    self.kernel_NK, self.max_rows = kernel_NK, max_rows

  def __call__(self, x, kernel, dimension_numbers, precision=None, preferred_element_type=None, out_sharding=None):
    rows = math.prod(x.shape[:-1])
    if rows > self.max_rows or dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or out_sharding is not None:
      return jax.lax.dot_general(x, kernel, dimension_numbers, precision=precision,
                                 preferred_element_type=preferred_element_type)
    y_NR = jnp.einsum("nk,rk->nr", self.kernel_NK.astype(kernel.dtype), x.reshape(rows, x.shape[-1]),
                      precision=precision, preferred_element_type=preferred_element_type)
    # the barrier keeps XLA from folding the transpose back into the product (which would undo the layout)
    return jax.lax.optimization_barrier(y_NR).T.reshape(*x.shape[:-1], kernel.shape[-1])


def few_rows_view(module: nnx.Module, max_rows: int = MAX_ROWS) -> nnx.Module:
  """`module`, or on a CPU backend a copy whose linear layers multiply few rows from transposed kernels."""
  if jax.default_backend() != "cpu" or not isinstance(module, nnx.Module):
    return module
  graphdef, state = nnx.split(module)
  view = nnx.merge(graphdef, state)
  for _, layer in view.iter_modules():
    if isinstance(layer, nnx.Linear):
      kernel = layer.kernel[...]  # in the compute dtype, cast once (a no-op cast in the step)
      kernel_NK = jax.lax.optimization_barrier(kernel.astype(layer.dtype or kernel.dtype).T)  # once, outside loops
      layer.dot_general = _FewRowsDot(kernel_NK, max_rows)
  return view
