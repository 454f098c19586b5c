"""The coarse-to-fine family's stage 2: every fine token at once from the whole coarse-label sequence (CTF).

A bidirectional transformer (LLaMA blocks, 2-D RoPE) over [class embedding, coarse label_0, ..., label_{L-1}]:
every position has group id 0, so the one group mask (`ar_gen/kernels/mask.py`) lets each position see all
others, and one forward pass gives the fine-token logits [B, L, V] of all L positions. The class prefix has the
all-zero rotary table (as in the next-token model). Stage 1 is a plain next-token model over the coarse labels
(`ar_gen/models/next_token.py` with a K-way layout); this file is only stage 2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen.layout import TokenLayout
from ar_gen.nn.layers import RMSNorm, dropout as dropout_fn, logical, swiglu_hidden
from ar_gen.nn.rope import rope_2d_table
from ar_gen.nn.transformer import Transformer
from ar_gen.models.next_token import preset_sizes
from tokenizers.model import dtype


class FineTokenModel(nnx.Module):
  """Class-conditional bidirectional transformer: coarse labels [B, L] of K ids -> fine logits [B, L, V]."""

  def __init__(self, fine_layout: TokenLayout, num_clusters: int, num_classes: int, depth: int, dim: int,
               num_heads: int, *, num_kv_heads: int | None = None, class_dropout: float = 0.0,
               token_dropout: float = 0.0, dropout: float = 0.0, mlp_hidden: int | None = None,
               qk_norm: bool = False, attn_impl: str = "auto", rope_base: float = 10000.0, norm_eps: float = 1e-5,
               rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    if len(fine_layout.maps) != 1 or fine_layout.kind != "ids":
      raise ValueError(f"stage 2 needs one map of token ids, got {fine_layout.describe()}")
    self.layout, self.num_classes = fine_layout, num_classes
    self.class_dropout, self.token_dropout = class_dropout, token_dropout
    init = nnx.initializers.normal(0.02)
    self.cls_embedding = nnx.Embed(num_classes + 1, dim, embedding_init=logical(init, None, "embed"), dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs)
    self.coarse_embeddings = nnx.Embed(num_clusters, dim, embedding_init=logical(init, "vocab", "embed"),
                                       dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.transformer = Transformer(depth, dim, num_heads, num_kv_heads, mlp_hidden=mlp_hidden, qk_norm=qk_norm,
                                   attn_impl=attn_impl, dropout=dropout, norm_eps=norm_eps, rngs=rngs, dtype=dtype,
                                   param_dtype=param_dtype)
    self.norm = RMSNorm(dim, norm_eps, param_dtype=param_dtype)
    self.output = nnx.Linear(dim, fine_layout.vocab_size, use_bias=False,
                             kernel_init=logical(nnx.initializers.zeros, "embed", "vocab"), dtype=dtype,
                             param_dtype=param_dtype, rngs=rngs)
    self.head_dim, self.rope_base = dim // num_heads, rope_base

  def __call__(self, coarse_BL: jax.Array, labels_B: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None) -> jax.Array:
    """Fine-token logits [B, L, V] (float32) of every position, from all coarse labels and the class."""
    b, n = coarse_BL.shape
    if n != self.layout.num_tokens:
      raise ValueError(f"stage 2 reads the whole coarse sequence of {self.layout.num_tokens} labels, got {n}")
    if train and self.class_dropout > 0:
      drop = jax.random.uniform(jax.random.fold_in(rng, 0), (b,)) < self.class_dropout
      labels_B = jnp.where(drop, self.num_classes, labels_B)
    tokens_BLC = self.coarse_embeddings(coarse_BL)
    if train and self.token_dropout > 0:
      tokens_BLC = dropout_fn(tokens_BLC, self.token_dropout, jax.random.fold_in(rng, 1))
    h_BLC = jnp.concatenate([self.cls_embedding(labels_B)[:, None], tokens_BLC], axis=1)
    table = jnp.asarray(rope_2d_table(*self.layout.grid, self.head_dim, self.rope_base))
    rope = jnp.broadcast_to(table, (b, *table.shape))
    groups_BL = jnp.zeros((b, n + 1), jnp.int32)  # one group: every position sees every other
    block_rng = jax.random.fold_in(rng, 2) if train and rng is not None else None
    h_BLC, _ = self.transformer(h_BLC, rope, groups_BL, rng=block_rng)
    return self.output(self.norm(h_BLC[:, 1:])).astype(jnp.float32)


def build_fine_model(m: ml_collections.ConfigDict, fine_layout: TokenLayout, num_clusters: int,
                     rngs: nnx.Rngs) -> FineTokenModel:
  """A FineTokenModel from the `model` section of a config (`size`: LlamaGen's presets, or 'custom')."""
  depth, dim, heads = preset_sizes(m)
  return FineTokenModel(fine_layout, num_clusters, m.num_classes, depth, dim, heads,
                        num_kv_heads=m.num_kv_heads or None, class_dropout=m.class_dropout,
                        token_dropout=m.token_dropout, dropout=m.dropout,
                        mlp_hidden=swiglu_hidden(dim, m.mlp_multiple_of), qk_norm=m.qk_norm, attn_impl=m.attn_impl,
                        rope_base=m.rope_base, norm_eps=m.norm_eps, rngs=rngs, dtype=dtype(m.dtype),
                        param_dtype=dtype(m.param_dtype))
