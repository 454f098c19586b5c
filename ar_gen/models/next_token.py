"""Next-token prediction over a tokenizer's grid in raster order, class-conditional (LlamaGen).

Layout (DESIGN.md, `TokenLayout.raster`): the sequence is [class embedding, token_0, ..., token_{N-2}]; position
p predicts token p, and its group id is p, so the group mask is the causal mask. Positions carry 2-D RoPE of the
token they hold; the class prefix gets LlamaGen's all-zero table. Class dropout replaces labels by the null class
`num_classes` (classifier-free guidance); token dropout drops input embeddings; `dropout` drops the outputs of each
block's attention and MLP branches (LlamaGen's resid / FFN dropout). All three act in training only.

The model implements the sampler's step contract (`ar_gen.decoding.driver.Steps`) itself: the condition is
{"label": [B]} (null: `num_classes`), the carry is the next position's input embedding [B, 1, C].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen.conditioning import null_class_labels
from ar_gen.layout import TokenLayout
from ar_gen.nn.layers import RMSNorm, dropout as dropout_fn, logical, swiglu_hidden
from ar_gen.nn.rope import padded_rows, rope_2d_table
from ar_gen.nn.transformer import Cache, Transformer
from tokenizers.model import dtype

# LlamaGen's class-conditional sizes: (depth, dim, heads) (autoregressive/models/gpt.py, GPT_B .. GPT_3B).
PRESETS = {"B": (12, 768, 12), "L": (24, 1024, 16), "XL": (36, 1280, 20), "XXL": (48, 1536, 24),
           "3B": (24, 3200, 32)}


class NextTokenModel(nnx.Module):
  """Class-conditional raster-order transformer over the one token map of a `layout` of ids."""

  def __init__(self, layout: TokenLayout, num_classes: int, depth: int, dim: int,
               num_heads: int, *, num_kv_heads: int | None = None, class_dropout: float = 0.1,
               token_dropout: float = 0.0, dropout: float = 0.0, mlp_hidden: int | None = None, qk_norm: bool = False,
               attn_impl: str = "auto", rope_base: float = 10000.0, norm_eps: float = 1e-5, rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    if len(layout.maps) != 1 or layout.kind != "ids":
      raise ValueError(f"the next-token model needs one map of token ids; the tokenizer gives {layout.describe()} "
                       "(a multi-map layout is the next-scale family's: task next_scale)")
    vocab_size, grid = layout.vocab_size, layout.grid
    self.layout = TokenLayout.raster(grid, vocab_size)
    self.vocab_size, self.grid, self.num_classes = vocab_size, tuple(grid), num_classes
    self.num_tokens = self.layout.num_tokens
    self.class_dropout, self.token_dropout, self.dtype = class_dropout, token_dropout, dtype
    init = nnx.initializers.normal(0.02)
    self.cls_embedding = nnx.Embed(num_classes + 1, dim, embedding_init=logical(init, None, "embed"), dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs)
    self.tok_embeddings = nnx.Embed(vocab_size, dim, embedding_init=logical(init, "vocab", "embed"), dtype=dtype,
                                    param_dtype=param_dtype, rngs=rngs)
    self.transformer = Transformer(depth, dim, num_heads, num_kv_heads, mlp_hidden=mlp_hidden, qk_norm=qk_norm,
                                   attn_impl=attn_impl, dropout=dropout,
                                   norm_eps=norm_eps, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.norm = RMSNorm(dim, norm_eps, param_dtype=param_dtype)
    self.output = nnx.Linear(dim, vocab_size, use_bias=False,
                             kernel_init=logical(nnx.initializers.zeros, "embed", "vocab"), dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs)
    self.head_dim, self.rope_base = dim // num_heads, rope_base

  @property
  def groups(self) -> jax.Array:
    """Group id of each of the N sequence positions (next-token: the position)."""
    return jnp.asarray(self.layout.group_ids())

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
      h_BLC = dropout_fn(h_BLC, self.token_dropout, jax.random.fold_in(rng, 1))
    groups_BL = jnp.broadcast_to(self.groups[:n], (b, n))
    table = self.rope_table()[:n]
    rope = jnp.broadcast_to(table, (b, *table.shape))
    block_rng = jax.random.fold_in(rng, 2) if train and rng is not None else None
    h_BLC, _ = self.transformer(h_BLC, rope, groups_BL, rng=block_rng)
    return self._head(h_BLC)

  def init_cache(self, batch: int, spare_slots: int = 0) -> Cache:
    """An empty cache of the N positions and `spare_slots` more (speculative windows that run past the end)."""
    return self.transformer.init_cache(batch, jnp.arange(self.num_tokens + spare_slots, dtype=jnp.int32))

  # ---------------------------------------------------------------- the sampler's step contract
  def null_condition(self, cond: dict) -> dict:
    return null_class_labels(cond, self.num_classes)

  def begin(self, cond: dict, spare_slots: int = 0) -> tuple[None, jax.Array, Cache]:
    """(no context, the class embedding [B, 1, C] as the first input, an empty cache)."""
    labels_B = cond["label"]
    return None, self.cls_embedding(labels_B)[:, None], self.init_cache(labels_B.shape[0], spare_slots)

  def step(self, inputs_BlC: jax.Array, index: jax.Array | int, cache: Cache,
           context: None = None) -> tuple[jax.Array, Cache]:
    """Feeds the input embeddings of positions index .. index + l - 1 [B, l, C] (l = 1 in plain sampling, more to
    verify a speculative window); logits [B, l, V] for those tokens. Positions past the end (a window's spare
    slots, from `begin(spare_slots=...)`) get the last position's rotary table."""
    del context
    b, l = inputs_BlC.shape[:2]
    groups_BL = jnp.broadcast_to(index + jnp.arange(l, dtype=jnp.int32), (b, l))
    table = jax.lax.dynamic_slice_in_dim(padded_rows(self.rope_table(), l - 1), index, l)
    rope = jnp.broadcast_to(table, (b, *table.shape))
    h_BLC, cache = self.transformer(inputs_BlC, rope, groups_BL, cache, index)
    return self._head(h_BLC), cache

  def feed(self, tokens_B1: jax.Array, index: jax.Array | int, carry: jax.Array, context: None = None) -> jax.Array:
    """The input embedding of position `index + 1`: token `index`'s [B, 1, C]."""
    del index, carry, context
    return self.tok_embeddings(tokens_B1)


def preset_sizes(m: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(depth, dim, heads) of a `model` section: LlamaGen's preset `size`, or its own sizes for 'custom'."""
  if m.size != "custom" and m.size not in PRESETS:
    raise ValueError(f"model.size must be one of {sorted(PRESETS)} or 'custom', got {m.size!r}")
  return PRESETS[m.size] if m.size != "custom" else (m.depth, m.dim, m.num_heads)


def build_next_token(m: ml_collections.ConfigDict, layout: TokenLayout, rngs: nnx.Rngs) -> NextTokenModel:
  """A NextTokenModel over `layout` from the `model` section of a config (`size` preset or explicit sizes)."""
  depth, dim, heads = preset_sizes(m)
  return NextTokenModel(layout, m.num_classes, depth, dim, heads, num_kv_heads=m.num_kv_heads or None,
                        class_dropout=m.class_dropout, token_dropout=m.token_dropout,
                        dropout=m.get("dropout", 0.0),  # absent from configs written before it existed
                        mlp_hidden=swiglu_hidden(dim, m.mlp_multiple_of), qk_norm=m.qk_norm,
                        attn_impl=m.attn_impl, rope_base=m.rope_base, norm_eps=m.norm_eps, rngs=rngs,
                        dtype=dtype(m.dtype), param_dtype=dtype(m.param_dtype))
