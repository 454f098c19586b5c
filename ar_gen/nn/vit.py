"""The ViT block (timm's `Block`, as MAR's encoder and decoder use it), with the call of `ar_gen.nn.transformer`'s
blocks so `Transformer(make_block=...)` stacks it.

x + drop(attn(LayerNorm(x))), then x + drop(MLP(LayerNorm(x))): LayerNorms with affine parameters (eps 1e-6),
attention with biases on the query, value and output projections (timm's key bias adds the same number to every
logit of a query, so softmax removes it: a converter drops it), an exact-GELU MLP of width `mlp_ratio * dim`.
`dropout` (timm's proj_drop) acts on the attention output and after each MLP layer when the call gets a key; timm's
dropout of the attention probabilities (attn_drop) is not applied (the attention kernels have none).
`layer_scale` (DINOv2's LayerScale, timm's `init_values`): each branch's output multiplied by a learned per-channel
factor `ls1` / `ls2` initialised to that value; None (timm's default, MAR's) has none.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ar_gen.nn.layers import dropout, logical
from ar_gen.nn.transformer import Attention

LN_EPS = 1e-6


class ViTBlock(nnx.Module):
  """timm's pre-norm ViT block (see the module docstring)."""

  def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, dropout: float = 0.0,
               attn_impl: str = "auto", layer_scale: float | None = None, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    init = nnx.initializers.xavier_uniform()
    hidden = round(dim * mlp_ratio)
    self.dropout = dropout
    self.norm1 = nnx.LayerNorm(dim, epsilon=LN_EPS, **kw)
    self.attention = Attention(dim, num_heads, num_heads, biases=True, attn_impl=attn_impl, **kw)
    self.norm2 = nnx.LayerNorm(dim, epsilon=LN_EPS, **kw)
    self.fc1 = nnx.Linear(dim, hidden, kernel_init=logical(init, "embed", "mlp"), **kw)
    self.fc2 = nnx.Linear(hidden, dim, kernel_init=logical(init, "mlp", "embed"), **kw)
    if layer_scale is None:
      self.ls1 = self.ls2 = None
    else:
      self.ls1 = nnx.Param(jnp.full((dim,), layer_scale, param_dtype))
      self.ls2 = nnx.Param(jnp.full((dim,), layer_scale, param_dtype))

  def _scaled(self, y, gamma):
    return y if gamma is None else y * gamma[...].astype(y.dtype)

  def __call__(self, x_BLC, rope_BLP2, q_groups_BL, cache=None, index=0, rng=None):
    keys = [None] * 3 if rng is None else [jax.random.fold_in(rng, i) for i in range(3)]
    y, new_cache = self.attention(self.norm1(x_BLC), rope_BLP2, q_groups_BL, cache, index)
    x_BLC = x_BLC + self._scaled(dropout(y, self.dropout, keys[0]), self.ls1)
    h = dropout(nnx.gelu(self.fc1(self.norm2(x_BLC)), approximate=False), self.dropout, keys[1])
    return x_BLC + self._scaled(dropout(self.fc2(h), self.dropout, keys[2]), self.ls2), new_cache
