"""The causal member of the continuous family: raster-order next-token prediction of token vectors (MAR's "AR"
variant), a KV-cached causal transformer whose output z at each position conditions the per-token diffusion head.

Layout: `TokenLayout.raster(kind="vectors")`; the sequence is [class embedding, token_0, ..., token_{N-2}] (each
token projected to the width by a linear map), position p gives z_p for token p, group ids are the positions (the
causal mask), 2-D RoPE of the token a position holds, LLaMA blocks (`ar_gen.nn.transformer`), a final RMSNorm. The
null class is `num_classes` (classifier-free guidance, class dropout in training). The model is its own sampler step
contract: the carry is the next position's input embedding [B, 1, C].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ar_gen.conditioning import null_class_labels
from ar_gen.layout import TokenLayout
from ar_gen.nn.diffusion_mlp import DenoisingMLP
from ar_gen.nn.layers import RMSNorm, swiglu_hidden
from ar_gen.nn.rope import padded_rows, rope_2d_table
from ar_gen.nn.transformer import Cache, Transformer


class CausalContinuousModel(nnx.Module):
  """Class-conditional raster-order transformer over continuous tokens, with its diffusion head."""

  def __init__(self, layout: TokenLayout, num_classes: int, depth: int, dim: int, num_heads: int, *,
               class_dropout: float = 0.1, dropout: float = 0.0, head_depth: int = 6, head_width: int = 1024,
               attn_impl: str = "auto", rope_base: float = 10000.0, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    if len(layout.maps) != 1 or layout.kind != "vectors":
      raise ValueError(f"the causal continuous model needs one map of continuous tokens (a KL tokenizer's); the "
                       f"tokenizer gives {layout.describe()}")
    self.layout, self.num_classes, self.class_dropout = layout, num_classes, class_dropout
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.cls_embedding = nnx.Embed(num_classes + 1, dim, embedding_init=nnx.initializers.normal(0.02), **kw)
    self.z_proj = nnx.Linear(layout.token_dim, dim, **kw)
    self.transformer = Transformer(depth, dim, num_heads, mlp_hidden=swiglu_hidden(dim, 32), attn_impl=attn_impl,
                                   dropout=dropout, **kw)
    self.norm = RMSNorm(dim, param_dtype=param_dtype)
    self.head = DenoisingMLP(layout.token_dim, dim, head_width, head_depth, **kw)
    self.head_dim, self.rope_base = dim // num_heads, rope_base

  def rope_table(self) -> jax.Array:
    return jnp.asarray(rope_2d_table(*self.layout.grid, self.head_dim, self.rope_base)[:self.layout.num_tokens])

  def _rope(self, b: int, start, n: int) -> jax.Array:
    table = jax.lax.dynamic_slice_in_dim(padded_rows(self.rope_table(), n - 1), start, n)
    return jnp.broadcast_to(table, (b, *table.shape))

  def __call__(self, tokens_BLD: jax.Array, labels_B: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None) -> jax.Array:
    """Teacher-forced z [B, L, C]: position p from the class and tokens < p."""
    b, n, _ = tokens_BLD.shape
    if train and self.class_dropout > 0:
      drop = jax.random.uniform(jax.random.fold_in(rng, 0), (b,)) < self.class_dropout
      labels_B = jnp.where(drop, self.num_classes, labels_B)
    h = jnp.concatenate([self.cls_embedding(labels_B)[:, None], self.z_proj(tokens_BLD[:, :-1])], axis=1)
    groups_BL = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
    h, _ = self.transformer(h, self._rope(b, 0, n), groups_BL,
                            rng=jax.random.fold_in(rng, 1) if train and rng is not None else None)
    return self.norm(h)

  # ---------------------------------------------------------------- the sampler's step contract
  def null_condition(self, cond: dict) -> dict:
    return null_class_labels(cond, self.num_classes)

  def begin(self, cond: dict, spare_slots: int = 0) -> tuple[None, jax.Array, Cache]:
    """(no context, the class embedding [B, 1, C], an empty cache of the L positions and `spare_slots` more)."""
    labels_B = cond["label"]
    groups = jnp.arange(self.layout.num_tokens + spare_slots, dtype=jnp.int32)
    return None, self.cls_embedding(labels_B)[:, None], self.transformer.init_cache(labels_B.shape[0], groups)

  def step(self, inputs_BlC: jax.Array, index, cache: Cache, context=None) -> tuple[jax.Array, Cache]:
    """z [B, l, C] of tokens index .. index + l - 1 from their input embeddings (l > 1: a speculative window)."""
    del context
    b, l = inputs_BlC.shape[:2]
    groups_BL = jnp.broadcast_to(index + jnp.arange(l, dtype=jnp.int32), (b, l))
    h, cache = self.transformer(inputs_BlC, self._rope(b, index, l), groups_BL, cache, index)
    return self.norm(h), cache

  def feed(self, tokens_B1D: jax.Array, index, carry, context=None) -> jax.Array:
    del index, carry, context
    return self.z_proj(tokens_B1D)
