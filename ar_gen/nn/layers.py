"""Norms and MLPs of the transformer: RMSNorm (computed in float32), l2 normalisation, the SwiGLU feed-forward;
dropout and drop-path (stochastic depth) as functions of an explicit key."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def logical(init, *names: str | None):
  """An initializer whose variable records the logical axis names `names` (mapped to the mesh by the trainer)."""
  return nnx.with_partitioning(init, names)


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-6) -> jax.Array:
  """x / max(|x|, eps) along `axis`."""
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


def dropout(x: jax.Array, rate: float, rng: jax.Array | None, *, per_example: bool = False) -> jax.Array:
  """Inverted dropout: zeroes elements of `x` with probability `rate` and scales the rest by 1 / (1 - rate).

  `per_example`: one draw per leading index (drop-path / stochastic depth: a whole residual branch of an example).
  Identity when `rate` is 0 or `rng` is None (evaluation and sampling pass no key).
  """
  if rng is None or rate <= 0:
    return x
  shape = (x.shape[0],) + (1,) * (x.ndim - 1) if per_example else x.shape
  keep = jax.random.bernoulli(rng, 1 - rate, shape)
  return jnp.where(keep, x / (1 - rate), 0).astype(x.dtype)


def swiglu_hidden(dim: int, multiple_of: int = 256, multiplier: float | None = None) -> int:
  """LLaMA's SwiGLU width: 2/3 of 4 * dim (times `multiplier`), rounded up to a multiple of `multiple_of`."""
  hidden = int(2 * (4 * dim) / 3)
  if multiplier is not None:
    hidden = int(multiplier * hidden)
  return -(-hidden // multiple_of) * multiple_of


class RMSNorm(nnx.Module):
  """x / rms(x) * weight over the last axis."""

  def __init__(self, dim: int, eps: float = 1e-5, *, param_dtype=jnp.float32):
    self.eps = eps
    self.weight = nnx.Param(jnp.ones((dim,), param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    normed = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return normed.astype(x.dtype) * self.weight[...].astype(x.dtype)


class SwiGLU(nnx.Module):
  """w2(silu(w1 x) * w3 x), no biases."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs, init_std: float = 0.02, dtype=jnp.float32,
               param_dtype=jnp.float32):
    kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    init = nnx.initializers.normal(init_std)
    self.w1 = nnx.Linear(dim, hidden, kernel_init=logical(init, "embed", "mlp"), **kw)
    self.w3 = nnx.Linear(dim, hidden, kernel_init=logical(init, "embed", "mlp"), **kw)
    self.w2 = nnx.Linear(hidden, dim, kernel_init=logical(init, "mlp", "embed"), **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.w2(nnx.silu(self.w1(x)) * self.w3(x))
