"""Pre-norm transformer blocks with an explicit KV cache (a pytree passed in and returned, never module state).

A cache is a dict {"k": [one [B, K, S, D] array per layer], "v": ..., "groups": [B, S]}: head-major, the layout
the decode kernel reads without a transpose, one array per layer so a step updates each in place. `groups` holds
the group id of every slot of the full layout (known before decoding), and a call at write position `index` fills
slots [index, index + L) and may see the slots below index + L whose group is <= the query's group.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ar_gen.kernels import dispatch
from ar_gen.kernels import mask as masks
from ar_gen.kernels.flash_attention import round_up
from ar_gen.nn.layers import RMSNorm, SwiGLU, dropout, l2_normalize, logical, swiglu_hidden
from ar_gen.nn.rope import apply_rope

Cache = dict[str, jax.Array | list[jax.Array]]
DECODE_BLOCK_K = 128


class Attention(nnx.Module):
  """Multi-head (grouped-query) self-attention with optional RoPE and QK normalisation.

  qk_norm: RMS-norm of queries and keys (learned weights). qk_l2norm: VAR's l2-normalised queries and keys, the
  logits scaled by a learned per-head factor exp(min(log_scale, log 100)) instead of 1/sqrt(D). biases: learned
  biases on queries, values and the output projection (keys have none), as in VAR. A call without a RoPE table
  (`rope_BLP2=None`) uses no rotary embedding.
  """

  def __init__(self, dim: int, num_heads: int, num_kv_heads: int, *, qk_norm: bool = False, qk_l2norm: bool = False,
               biases: bool = False, attn_impl: str = "auto", rngs: nnx.Rngs, init_std: float = 0.02,
               dtype=jnp.float32, param_dtype=jnp.float32):
    if dim % num_heads:
      raise ValueError(f"{dim=} must be a multiple of {num_heads=}")
    self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, dim // num_heads
    dispatch.resolve(attn_impl)
    self.attn_impl = attn_impl
    kw = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    init = nnx.initializers.normal(init_std)
    self.wqkv = nnx.Linear(dim, (num_heads + 2 * num_kv_heads) * self.head_dim,
                           kernel_init=logical(init, "embed", "qkv"), **kw)
    self.wo = nnx.Linear(dim, dim, kernel_init=logical(init, "qkv", "embed"), **{**kw, "use_bias": biases})
    self.q_norm = RMSNorm(self.head_dim, param_dtype=param_dtype) if qk_norm else None
    self.k_norm = RMSNorm(self.head_dim, param_dtype=param_dtype) if qk_norm else None
    self.log_scale = nnx.Param(jnp.full((num_heads,), np.log(4.0), param_dtype)) if qk_l2norm else None
    self.q_bias = nnx.Param(jnp.zeros((num_heads * self.head_dim,), param_dtype)) if biases else None
    self.v_bias = nnx.Param(jnp.zeros((num_kv_heads * self.head_dim,), param_dtype)) if biases else None

  def __call__(self, x_BLC: jax.Array, rope_BLP2: jax.Array, q_groups_BL: jax.Array,
               cache: tuple[jax.Array, jax.Array, jax.Array] | None = None,
               index: jax.Array | int = 0) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    b, l, _ = x_BLC.shape
    h, kh, d = self.num_heads, self.num_kv_heads, self.head_dim
    q, k, v = jnp.split(self.wqkv(x_BLC), [h * d, (h + kh) * d], axis=-1)
    if self.q_bias is not None:
      q, v = q + self.q_bias[...].astype(q.dtype), v + self.v_bias[...].astype(v.dtype)
    q_BLHD, k_BLKD, v_BLKD = q.reshape(b, l, h, d), k.reshape(b, l, kh, d), v.reshape(b, l, kh, d)
    if self.q_norm is not None:
      q_BLHD, k_BLKD = self.q_norm(q_BLHD), self.k_norm(k_BLKD)
    if self.log_scale is not None:  # the kernels scale by 1/sqrt(D): fold sqrt(D) * the learned scale into q
      scale_H = jnp.exp(jnp.minimum(self.log_scale[...].astype(jnp.float32), np.log(100.0))) * d ** 0.5
      q_BLHD = (l2_normalize(q_BLHD.astype(jnp.float32)) * scale_H[:, None]).astype(q_BLHD.dtype)
      k_BLKD = l2_normalize(k_BLKD.astype(jnp.float32)).astype(k_BLKD.dtype)
    if rope_BLP2 is not None:
      q_BLHD, k_BLKD = apply_rope(q_BLHD, rope_BLP2), apply_rope(k_BLKD, rope_BLP2)
    if cache is None:
      out = dispatch.attention(q_BLHD, k_BLKD, v_BLKD, q_groups_BL, q_groups_BL, impl=self.attn_impl)
      new_cache = None
    else:
      k_BKSD, v_BKSD, groups_BS = cache
      k_BKSD = jax.lax.dynamic_update_slice_in_dim(
          k_BKSD, k_BLKD.transpose(0, 2, 1, 3).astype(k_BKSD.dtype), index, axis=2)
      v_BKSD = jax.lax.dynamic_update_slice_in_dim(
          v_BKSD, v_BLKD.transpose(0, 2, 1, 3).astype(v_BKSD.dtype), index, axis=2)
      new_cache = (k_BKSD, v_BKSD)
      if isinstance(index, int) and dispatch.resolve(self.attn_impl) != "pallas":
        # a static write position (map groups): the slots from index + l on are hidden from every query of this
        # call, so attention reads only the slots before (the Pallas kernel skips hidden key blocks itself)
        k_BKSD, v_BKSD, groups_BS = k_BKSD[:, :, :index + l], v_BKSD[:, :, :index + l], groups_BS[:, :index + l]
      valid_BS = jnp.broadcast_to(jnp.arange(k_BKSD.shape[2]) < index + l, groups_BS.shape)
      out = dispatch.cached_attention(q_BLHD, k_BKSD.astype(q_BLHD.dtype), v_BKSD.astype(q_BLHD.dtype), q_groups_BL,
                                      groups_BS, valid_BS, impl=self.attn_impl, block_k=DECODE_BLOCK_K)
    return self.wo(out.reshape(b, l, h * d)), new_cache


class Block(nnx.Module):
  """x + drop(attn(norm(x))); then + drop(mlp(norm(x))): `dropout` on both branch outputs in training (LlamaGen's
  resid and FFN dropout), applied only when the call gets a key `rng`."""

  def __init__(self, dim: int, num_heads: int, num_kv_heads: int, *, mlp_hidden: int, qk_norm: bool,
               attn_impl: str, norm_eps: float, rngs: nnx.Rngs, init_std: float = 0.02, dropout: float = 0.0,
               dtype=jnp.float32, param_dtype=jnp.float32):
    self.dropout = dropout
    self.attention = Attention(dim, num_heads, num_kv_heads, qk_norm=qk_norm, attn_impl=attn_impl, rngs=rngs,
                               init_std=init_std, dtype=dtype, param_dtype=param_dtype)
    self.feed_forward = SwiGLU(dim, mlp_hidden, rngs=rngs, init_std=init_std, dtype=dtype, param_dtype=param_dtype)
    self.attention_norm = RMSNorm(dim, norm_eps, param_dtype=param_dtype)
    self.ffn_norm = RMSNorm(dim, norm_eps, param_dtype=param_dtype)

  def __call__(self, x_BLC, rope_BLP2, q_groups_BL, cache=None, index=0, rng=None):
    attn_key, ffn_key = (None, None) if rng is None else (jax.random.fold_in(rng, 0), jax.random.fold_in(rng, 1))
    y, new_cache = self.attention(self.attention_norm(x_BLC), rope_BLP2, q_groups_BL, cache, index)
    h = x_BLC + dropout(y, self.dropout, attn_key)
    return h + dropout(self.feed_forward(self.ffn_norm(h)), self.dropout, ffn_key), new_cache


class Transformer(nnx.Module):
  """A stack of blocks; `__call__` runs them with or without a KV cache.

  The blocks are LLaMA's (`Block`) unless `make_block(index)` builds another kind with the same call signature
  plus keyword arguments that `__call__` passes through (e.g. the next-scale model's AdaLN condition). A training
  call passes a key `rng`; layer i gets `rng=fold_in(rng, i)` (its dropout / drop-path draws), and none without it.
  """

  def __init__(self, depth: int, dim: int, num_heads: int, num_kv_heads: int | None = None, *,
               mlp_hidden: int | None = None, qk_norm: bool = False, attn_impl: str = "auto", norm_eps: float = 1e-5,
               rngs: nnx.Rngs, init_std: float = 0.02, dropout: float = 0.0, dtype=jnp.float32,
               param_dtype=jnp.float32, make_block: Callable[[int], nnx.Module] | None = None):
    num_kv_heads = num_kv_heads or num_heads
    self.num_kv_heads, self.head_dim, self.dtype, self.attn_impl = num_kv_heads, dim // num_heads, dtype, attn_impl
    if make_block is None:
      make_block = lambda _: Block(dim, num_heads, num_kv_heads, mlp_hidden=mlp_hidden or swiglu_hidden(dim),
                                   qk_norm=qk_norm, attn_impl=attn_impl, norm_eps=norm_eps, rngs=rngs,
                                   init_std=init_std, dropout=dropout, dtype=dtype, param_dtype=param_dtype)
    self.layers = nnx.List([make_block(i) for i in range(depth)])

  def init_cache(self, batch: int, groups_S: jax.Array) -> Cache:
    """An empty cache for `batch` sequences laid out with group ids `groups_S` [S].

    For the Pallas decode kernel the slots are rounded up to whole key blocks (extra slots hidden from every query),
    so a decode step never pads the cache.
    """
    if dispatch.resolve(self.attn_impl) == "pallas":
      groups_S = masks.pad_groups(groups_S[None], round_up(groups_S.shape[0], DECODE_BLOCK_K), masks.HIDDEN)[0]
    shape = (batch, self.num_kv_heads, groups_S.shape[0], self.head_dim)
    return {"k": [jnp.zeros(shape, self.dtype) for _ in self.layers],
            "v": [jnp.zeros(shape, self.dtype) for _ in self.layers],
            "groups": jnp.broadcast_to(groups_S, (batch, groups_S.shape[0]))}

  def __call__(self, h_BLC: jax.Array, rope_BLP2: jax.Array | None, q_groups_BL: jax.Array,
               cache: Cache | None = None, index: jax.Array | int = 0, rng: jax.Array | None = None,
               **block_kwargs) -> tuple[jax.Array, Cache | None]:
    ks, vs = [], []
    for i, layer in enumerate(self.layers):
      layer_cache = None if cache is None else (cache["k"][i], cache["v"][i], cache["groups"])
      kwargs = block_kwargs if rng is None else {**block_kwargs, "rng": jax.random.fold_in(rng, i)}
      h_BLC, new = layer(h_BLC, rope_BLP2, q_groups_BL, layer_cache, index, **kwargs)
      if new is not None:
        ks.append(new[0]), vs.append(new[1])
    if cache is None:
      return h_BLC, None
    return h_BLC, {"k": ks, "v": vs, "groups": cache["groups"]}

