"""MAR's denoising MLP of one token vector (`SimpleMLPAdaLN`): AdaLN residual blocks conditioned on z and t.

net(x_t [N, D], t [N], z [N, C]) -> [N, 2 D] (epsilon, then the learned-range variance values): x is projected to
the width W; the condition y = timestep embedding(t) + linear(z), where the timestep embedding is an MLP
(W -> SiLU -> W) of the 256 sinusoidal frequencies of t (cos first, then sin; max period 10000). Each residual
block: h = LayerNorm(x) * (1 + scale) + shift, x + gate * MLP(h), with (shift, scale, gate) = linear(silu(y)).
The final layer: an affine-free LayerNorm modulated the same way (shift, scale), then a linear map to 2 D.
Initialisation is MAR's: Xavier-uniform linear maps with zero biases, the timestep MLP normal(0.02), and the
modulations and the output layer zero, so a fresh net predicts zeros.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

FREQUENCIES = 256
MAX_PERIOD = 10000.0
LN_EPS = 1e-6


def timestep_frequencies(t_N: jax.Array, dim: int = FREQUENCIES, max_period: float = MAX_PERIOD) -> jax.Array:
  """[cos(t f), sin(t f)] [N, dim] for dim / 2 frequencies f = max_period^(-i / (dim / 2))."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t_N.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def _linear(cin: int, cout: int, rngs: nnx.Rngs, dtype, param_dtype, init=None) -> nnx.Linear:
  return nnx.Linear(cin, cout, kernel_init=init or nnx.initializers.xavier_uniform(),
                    bias_init=nnx.initializers.zeros, dtype=dtype, param_dtype=param_dtype, rngs=rngs)


def _layer_norm(x: jax.Array) -> jax.Array:
  mean = jnp.mean(x, -1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(jnp.mean(jnp.square(x - mean), -1, keepdims=True) + LN_EPS)


class AdaLNResBlock(nnx.Module):
  """x + gate * MLP(LayerNorm(x) * (1 + scale) + shift)."""

  def __init__(self, width: int, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    self.in_ln = nnx.LayerNorm(width, epsilon=LN_EPS, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.fc1 = _linear(width, width, rngs, dtype, param_dtype)
    self.fc2 = _linear(width, width, rngs, dtype, param_dtype)
    self.ada = _linear(width, 3 * width, rngs, dtype, param_dtype, nnx.initializers.zeros)

  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    shift, scale, gate = jnp.split(self.ada(nnx.silu(y)), 3, axis=-1)
    h = self.in_ln(x) * (1 + scale) + shift
    return x + gate * self.fc2(nnx.silu(self.fc1(h)))


class DenoisingMLP(nnx.Module):
  """MAR's SimpleMLPAdaLN: (x_t, t, z) -> [eps, v] (see the module docstring)."""

  def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.token_dim = token_dim
    normal = nnx.initializers.normal(0.02)
    self.time_fc1 = _linear(FREQUENCIES, width, rngs, init=normal, **kw)
    self.time_fc2 = _linear(width, width, rngs, init=normal, **kw)
    self.cond_embed = _linear(cond_dim, width, rngs, **kw)
    self.input_proj = _linear(token_dim, width, rngs, **kw)
    self.blocks = nnx.List([AdaLNResBlock(width, rngs=rngs, **kw) for _ in range(depth)])
    self.final_ada = _linear(width, 2 * width, rngs, init=nnx.initializers.zeros, **kw)
    self.final = _linear(width, 2 * token_dim, rngs, init=nnx.initializers.zeros, **kw)

  def __call__(self, x_ND: jax.Array, t_N: jax.Array, z_NC: jax.Array) -> jax.Array:
    t_emb = self.time_fc2(nnx.silu(self.time_fc1(timestep_frequencies(t_N))))
    y = t_emb + self.cond_embed(z_NC)
    x = self.input_proj(x_ND)
    for block in self.blocks:
      x = block(x, y)
    shift, scale = jnp.split(self.final_ada(nnx.silu(y)), 2, axis=-1)
    return self.final(_layer_norm(x) * (1 + scale) + shift).astype(jnp.float32)

  def guided(self, x_ND: jax.Array, t_N: jax.Array, z_NC: jax.Array, uncond_NC: jax.Array,
             scale: jax.Array) -> jax.Array:
    """[eps, v] with classifier-free guidance on eps only: eps_u + scale (eps_c - eps_u), v of the conditional
    branch (MAR's forward_with_cfg, both branches denoising the same x)."""
    n = x_ND.shape[0]
    out = self(jnp.concatenate([x_ND, x_ND]), jnp.concatenate([t_N, t_N]), jnp.concatenate([z_NC, uncond_NC]))
    cond, uncond = out[:n], out[n:]
    d = self.token_dim
    eps = uncond[:, :d] + scale * (cond[:, :d] - uncond[:, :d])
    return jnp.concatenate([eps, cond[:, d:]], axis=-1)
