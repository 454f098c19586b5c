"""Next-token prediction over a tokenizer's grid in raster order, class-conditional (LlamaGen).

Layout (DESIGN.md): the sequence is [class embedding, token_0, ..., token_{N-2}]; position p predicts token p,
and its group id is p, so the group mask is the causal mask. Positions carry 2-D RoPE of the token they hold;
the class prefix gets LlamaGen's all-zero table. Class dropout replaces labels by the null class `num_classes`
(classifier-free guidance); token dropout drops input embeddings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen.nn.layers import RMSNorm, logical, swiglu_hidden
from ar_gen.nn.rope import rope_2d_table
from ar_gen.nn.transformer import Cache, Transformer
from tokenizers.model import dtype

# LlamaGen's class-conditional sizes: (depth, dim, heads).
PRESETS = {"B": (12, 768, 12), "L": (24, 1024, 16), "XL": (36, 1280, 20), "XXL": (48, 1536, 24)}


class NextTokenModel(nnx.Module):
  """Class-conditional raster-order transformer over `grid_h x grid_w` tokens from `vocab_size` codes."""

  def __init__(self, vocab_size: int, grid: tuple[int, int], num_classes: int, depth: int, dim: int,
               num_heads: int, *, num_kv_heads: int | None = None, class_dropout: float = 0.1,
               token_dropout: float = 0.0, mlp_hidden: int | None = None, qk_norm: bool = False,
               attn_impl: str = "auto", rope_base: float = 10000.0, norm_eps: float = 1e-5, rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    self.vocab_size, self.grid, self.num_classes = vocab_size, tuple(grid), num_classes
    self.num_tokens = grid[0] * grid[1]
    self.class_dropout, self.token_dropout, self.dtype = class_dropout, token_dropout, dtype
    init = nnx.initializers.normal(0.02)
    self.cls_embedding = nnx.Embed(num_classes + 1, dim, embedding_init=logical(init, None, "embed"), dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs)
    self.tok_embeddings = nnx.Embed(vocab_size, dim, embedding_init=logical(init, "vocab", "embed"), dtype=dtype,
                                    param_dtype=param_dtype, rngs=rngs)
    self.transformer = Transformer(depth, dim, num_heads, num_kv_heads, mlp_hidden=mlp_hidden, qk_norm=qk_norm,
                                   attn_impl=attn_impl,
                                   norm_eps=norm_eps, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.norm = RMSNorm(dim, norm_eps, param_dtype=param_dtype)
    self.output = nnx.Linear(dim, vocab_size, use_bias=False,
                             kernel_init=logical(nnx.initializers.zeros, "embed", "vocab"), dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs)
    self.head_dim, self.rope_base = dim // num_heads, rope_base

  @property
  def groups(self) -> jax.Array:
    """Group id of each of the N sequence positions (next-token: the position)."""
    return jnp.arange(self.num_tokens, dtype=jnp.int32)

  def rope_table(self) -> jax.Array:
    """(cos, sin) [N, head_dim / 2, 2] for the N sequence positions (a compile-time constant)."""
    return jnp.asarray(rope_2d_table(*self.grid, self.head_dim, self.rope_base)[:self.num_tokens])

  def _head(self, h_BLC: jax.Array) -> jax.Array:
    return self.output(self.norm(h_BLC)).astype(jnp.float32)

  def __call__(self, tokens_BN: jax.Array, labels_B: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None) -> jax.Array:
    """Teacher-forced logits [B, N, V]: position p predicts token p from the class and tokens < p."""
    b, n = tokens_BN.shape
    if train and self.class_dropout > 0:
      drop = jax.random.uniform(jax.random.fold_in(rng, 0), (b,)) < self.class_dropout
      labels_B = jnp.where(drop, self.num_classes, labels_B)
    h_BLC = jnp.concatenate([self.cls_embedding(labels_B)[:, None], self.tok_embeddings(tokens_BN[:, :-1])], axis=1)
    if train and self.token_dropout > 0:
      keep = jax.random.bernoulli(jax.random.fold_in(rng, 1), 1 - self.token_dropout, h_BLC.shape)
      h_BLC = jnp.where(keep, h_BLC / (1 - self.token_dropout), 0).astype(h_BLC.dtype)
    groups_BL = jnp.broadcast_to(self.groups[:n], (b, n))
    table = self.rope_table()[:n]
    rope = jnp.broadcast_to(table, (b, *table.shape))
    h_BLC, _ = self.transformer(h_BLC, rope, groups_BL)
    return self._head(h_BLC)

  def init_cache(self, batch: int) -> Cache:
    return self.transformer.init_cache(batch, self.groups)

  def step(self, inputs_B: jax.Array, index: jax.Array, cache: Cache, *, is_class: bool) -> tuple[jax.Array, Cache]:
    """Feeds one position (the class at index 0, else the token at `index - 1`); logits [B, V] for token `index`."""
    embed = self.cls_embedding(inputs_B) if is_class else self.tok_embeddings(inputs_B)
    b = inputs_B.shape[0]
    groups_BL = jnp.full((b, 1), index, jnp.int32)
    table = jax.lax.dynamic_slice_in_dim(self.rope_table(), index, 1)
    rope = jnp.broadcast_to(table, (b, *table.shape))
    h_BLC, cache = self.transformer(embed[:, None], rope, groups_BL, cache, index)
    return self._head(h_BLC)[:, 0], cache


def build_next_token(m: ml_collections.ConfigDict, vocab_size: int, grid: tuple[int, int],
                     rngs: nnx.Rngs) -> NextTokenModel:
  """A NextTokenModel from the `model` section of a config (`size` preset or explicit depth/dim/heads)."""
  if m.size != "custom" and m.size not in PRESETS:
    raise ValueError(f"model.size must be one of {sorted(PRESETS)} or 'custom', got {m.size!r}")
  depth, dim, heads = PRESETS[m.size] if m.size != "custom" else (m.depth, m.dim, m.num_heads)
  return NextTokenModel(vocab_size, grid, m.num_classes, depth, dim, heads, num_kv_heads=m.num_kv_heads or None,
                        class_dropout=m.class_dropout, token_dropout=m.token_dropout,
                        mlp_hidden=swiglu_hidden(dim, m.mlp_multiple_of), qk_norm=m.qk_norm,
                        attn_impl=m.attn_impl, rope_base=m.rope_base, norm_eps=m.norm_eps, rngs=rngs,
                        dtype=dtype(m.dtype), param_dtype=dtype(m.param_dtype))
