"""Next-scale prediction (VAR): one AR step emits every token of the next scale of a multi-scale tokenizer.

Layout (DESIGN.md, `TokenLayout` grouped by map): the L tokens of the maps k = 0 .. K-1 (VAR's scales) form one
sequence, coarse to fine, and every position's group id is its map, so the group mask is VAR's block-causal mask
(a scale sees itself and the scales before it) and goes through the same attention dispatch and kernels as the
next-token model. The inputs of scale 0 are the class embedding plus a learned start embedding; the inputs of
scale k > 0 are the tokenizer's accumulated features f_hat of scales < k, area-downsampled to p_k (the residual
quantizer's `teacher_inputs` / `next_inputs`), through a linear embedding. Every position adds a learned absolute
position embedding and its scale's level embedding.

Blocks are VAR's: AdaLN conditioning on the class (a linear map of silu(class embedding) gives the shift, scale
and gate of both sublayers), l2-normalised queries and keys with a learned per-head scale, query and value
biases, a GELU MLP of width 4 * dim; an AdaLN head before the output layer. Class dropout replaces labels by the
null class `num_classes` (classifier-free guidance). In training, drop-path (stochastic depth) drops each block's
attention and MLP branches per example, with VAR's rate rising linearly from 0 at the first block to `drop_path` at
the last.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen.layout import TokenLayout
from ar_gen.nn.layers import dropout, logical
from ar_gen.nn.transformer import Attention, Cache, Transformer
from tokenizers.model import dtype

# VAR's released sizes: depth d, width 64 d, d heads.
DEPTHS = (16, 20, 24, 30)


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
  """LayerNorm without affine parameters, computed in float32."""
  xf = x.astype(jnp.float32)
  mean = jnp.mean(xf, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
  return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  return layer_norm(x, eps) * (1 + scale) + shift


class AdaLNBlock(nnx.Module):
  """x + gate1 * attn(modulate(x)); then + gate2 * mlp(modulate(x)), modulation from the class condition; each
  branch drop-pathed at rate `drop_path` when the call gets a key `rng`."""

  def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float, norm_eps: float, attn_impl: str,
               rngs: nnx.Rngs, init_std: float, depth: int, drop_path: float = 0.0, gate_init: float = 1e-5,
               dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    init = nnx.initializers.truncated_normal(init_std)
    hidden = round(dim * mlp_ratio)
    self.dim, self.norm_eps, self.drop_path = dim, norm_eps, drop_path
    self.attention = Attention(dim, num_heads, num_heads, qk_l2norm=True, biases=True, attn_impl=attn_impl,
                               init_std=init_std, **kw)
    self.fc1 = nnx.Linear(dim, hidden, kernel_init=logical(init, "embed", "mlp"), **kw)
    self.fc2 = nnx.Linear(hidden, dim, kernel_init=logical(init, "mlp", "embed"), **kw)
    self.ada_lin = nnx.Linear(dim, 6 * dim, kernel_init=logical(init, "embed", "mlp"), **kw)
    # VAR's initialisation: residual outputs shrunk with depth, gates scaled by `gate_init` (VAR's `alng`),
    # the other modulations halved (`aln`).
    self.attention.wo.kernel[...] /= math.sqrt(2 * depth)
    self.fc2.kernel[...] /= math.sqrt(2 * depth)
    scales = jnp.asarray([gate_init, gate_init, .5, .5, .5, .5])
    self.ada_lin.kernel[...] = self.ada_lin.kernel[...] * jnp.repeat(scales, dim)

  def __call__(self, x_BLC, rope_BLP2, q_groups_BL, cache=None, index=0, *, cond_BD, rng=None):
    attn_key, mlp_key = (None, None) if rng is None else (jax.random.fold_in(rng, 0), jax.random.fold_in(rng, 1))
    mod = self.ada_lin(nnx.silu(cond_BD))[:, None].astype(x_BLC.dtype)
    gate1, gate2, scale1, scale2, shift1, shift2 = jnp.split(mod, 6, axis=-1)
    y, new_cache = self.attention(modulate(x_BLC, shift1, scale1, self.norm_eps), rope_BLP2, q_groups_BL, cache,
                                  index)
    x_BLC = x_BLC + dropout(y * gate1, self.drop_path, attn_key, per_example=True)
    h = self.fc2(nnx.gelu(self.fc1(modulate(x_BLC, shift2, scale2, self.norm_eps)), approximate=True))
    return x_BLC + dropout(h * gate2, self.drop_path, mlp_key, per_example=True), new_cache


class NextScaleModel(nnx.Module):
  """Class-conditional next-scale transformer over a layout of maps (one AR step each) of `code_dim`-d codes."""

  def __init__(self, layout: TokenLayout, code_dim: int, num_classes: int, depth: int, dim: int,
               num_heads: int, *, mlp_ratio: float = 4.0, class_dropout: float = 0.1, norm_eps: float = 1e-6,
               drop_path: float = 0.0, adaln_gate_init: float = 1e-5, attn_impl: str = "auto", rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    if layout.group_by != "map" or layout.kind != "ids":
      raise ValueError(f"the next-scale model needs a layout of token-id maps, one AR step per map; got "
                       f"{layout.describe()} (a one-map grid is the next-token family's: task next_token)")
    self.layout, self.vocab_size, self.code_dim = layout, layout.vocab_size, code_dim
    self.num_classes, self.class_dropout, self.norm_eps, self.dtype = num_classes, class_dropout, norm_eps, dtype
    self.num_tokens, self.starts, self.sizes = layout.num_tokens, layout.group_starts, layout.group_sizes
    init_std = math.sqrt(1 / dim / 3)
    init = nnx.initializers.truncated_normal(init_std)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.word_embed = nnx.Linear(code_dim, dim, kernel_init=logical(init, None, "embed"), **kw)
    self.class_emb = nnx.Embed(num_classes + 1, dim, embedding_init=logical(init, None, "embed"), **kw)
    self.lvl_embed = nnx.Embed(len(layout.maps), dim, embedding_init=logical(init, None, "embed"), **kw)
    self.pos_start = nnx.Param(init(rngs.params(), (self.sizes[0], dim), param_dtype))
    self.pos = nnx.Param(init(rngs.params(), (self.num_tokens, dim), param_dtype))
    self.transformer = Transformer(
        depth, dim, num_heads, attn_impl=attn_impl, rngs=rngs, dtype=dtype, param_dtype=param_dtype,
        make_block=lambda i: AdaLNBlock(dim, num_heads, mlp_ratio=mlp_ratio, norm_eps=norm_eps, attn_impl=attn_impl,
                                        init_std=init_std, depth=depth, drop_path=drop_path * i / max(depth - 1, 1),
                                        gate_init=adaln_gate_init, **kw))
    self.head_ada = nnx.Linear(dim, 2 * dim, kernel_init=logical(init, "embed", "mlp"), **kw)
    self.head = nnx.Linear(dim, layout.vocab_size, kernel_init=logical(init, "embed", "vocab"), **kw)
    self.head_ada.kernel[...] *= 0.5
    self.head.kernel[...] *= 0.02

  @property
  def groups(self) -> jax.Array:
    """Group id (map index) of each of the L sequence positions."""
    return jnp.asarray(self.layout.group_ids())

  def condition(self, labels_B: jax.Array) -> jax.Array:
    return self.class_emb(labels_B)

  def _position(self, start: int, end: int) -> jax.Array:
    """Level + position embedding of sequence positions [start, end) -> [end - start, C]."""
    return self.lvl_embed(jnp.asarray(self.layout.levels()[start:end])) + self.pos[start:end].astype(self.dtype)

  def first_inputs(self, cond_BD: jax.Array) -> jax.Array:
    """Inputs of scale 0 [B, l_0, C]: the class embedding + the start embedding."""
    n = self.sizes[0]
    return cond_BD[:, None] + self.pos_start[...].astype(self.dtype) + self._position(0, n)

  def scale_inputs(self, features_BlD: jax.Array, scale: int) -> jax.Array:
    """Inputs of scale `scale` > 0 [B, p^2, C] from its downsampled accumulated features [B, p^2, code_dim]."""
    start = self.starts[scale]
    return self.word_embed(features_BlD.astype(self.dtype)) + self._position(start, start + self.sizes[scale])

  def _head(self, h_BLC: jax.Array, cond_BD: jax.Array) -> jax.Array:
    scale, shift = jnp.split(self.head_ada(nnx.silu(cond_BD))[:, None].astype(h_BLC.dtype), 2, axis=-1)
    return self.head(modulate(h_BLC, shift, scale, self.norm_eps)).astype(jnp.float32)

  def __call__(self, inputs_BlD: jax.Array, labels_B: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None) -> jax.Array:
    """Teacher-forced logits [B, L, V] from the tokenizer's inputs of scales 1 .. K-1 [B, L - p_0^2, code_dim]."""
    b = labels_B.shape[0]
    if train and self.class_dropout > 0:
      drop = jax.random.uniform(jax.random.fold_in(rng, 0), (b,)) < self.class_dropout
      labels_B = jnp.where(drop, self.num_classes, labels_B)
    cond_BD = self.condition(labels_B)
    first = self.sizes[0]
    h_BLC = jnp.concatenate([self.first_inputs(cond_BD), self.word_embed(inputs_BlD.astype(self.dtype))
                             + self._position(first, self.num_tokens)], axis=1)
    groups_BL = jnp.broadcast_to(self.groups, (b, self.num_tokens))
    block_rng = jax.random.fold_in(rng, 1) if train and rng is not None else None
    h_BLC, _ = self.transformer(h_BLC, None, groups_BL, rng=block_rng, cond_BD=cond_BD)
    return self._head(h_BLC, cond_BD)

  def init_cache(self, batch: int) -> Cache:
    return self.transformer.init_cache(batch, self.groups)

  def step(self, inputs_BlC: jax.Array, scale: int, cache: Cache, cond_BD: jax.Array) -> tuple[jax.Array, Cache]:
    """Feeds the embedded inputs of scale `scale` (from `first_inputs` / `scale_inputs`); logits [B, l, V]."""
    b, l = inputs_BlC.shape[:2]
    groups_BL = jnp.full((b, l), scale, jnp.int32)
    h_BLC, cache = self.transformer(inputs_BlC, None, groups_BL, cache, self.starts[scale], cond_BD=cond_BD)
    return self._head(h_BLC, cond_BD), cache


def var_size(m: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(depth, dim, heads) from `model.depth` (VAR's d: width 64 d, d heads) unless dim / num_heads are set."""
  return m.depth, m.dim or 64 * m.depth, m.num_heads or m.depth


def build_next_scale(m: ml_collections.ConfigDict, layout: TokenLayout, code_dim: int,
                     rngs: nnx.Rngs) -> NextScaleModel:
  """A NextScaleModel from the `model` section of a config and the tokenizer's layout and code width."""
  depth, dim, heads = var_size(m)
  return NextScaleModel(layout, code_dim, m.num_classes, depth, dim, heads, mlp_ratio=m.mlp_ratio,
                        class_dropout=m.class_dropout, norm_eps=m.norm_eps, attn_impl=m.attn_impl, rngs=rngs,
                        # training-only keys, absent from configs written before they existed
                        drop_path=m.get("drop_path", 0.0), adaln_gate_init=m.get("adaln_gate_init", 1e-5),
                        dtype=dtype(m.dtype), param_dtype=dtype(m.param_dtype))
