"""The discriminative family's stage 2, the pixel decoder (DiGIT): a frozen VQ's tokens generated from a sequence of
discriminative ids (k-means ids of a self-supervised encoder's features) given as a prefix.

The sequence is [id_0 .. id_{M-1} | VQ part], with LLaMA blocks (`ar_gen/nn/transformer.py`) and 2-D RoPE of each
part's own grid (the id grid, then the VQ grid). The prefix has group id 0, so the one group mask
(`ar_gen/kernels/mask.py`) lets the ids see each other and never a VQ position; the VQ part's groups are larger.
  * `variant='ar'`: the VQ part is [bos, v_0 .. v_{N-2}] with groups 1 .. N (causal after the prefix), position
    M + p predicts v_p. The model is the sampler's step contract (`ar_gen.decoding.driver.Steps`): `begin` runs the
    prefix through the blocks once into the KV cache, then each step feeds one token at offset M + index.
  * `variant='maskgit'`: the VQ part is [v_0 .. v_{N-1}] with masked positions holding the mask id V, all with
    group 1 (every VQ position sees the whole sequence); each position predicts its own token
    (`ar_gen/decoding/maskgit.py` decodes it).
`sequence_logits` gives the logits of every position [B, M + N, V] (the prefix's are never trained: the family's
loss reads the VQ part only); `__call__` the VQ part's [B, N, V].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen.layout import TokenLayout
from ar_gen.models.next_token import preset_sizes
from ar_gen.nn.layers import RMSNorm, logical, swiglu_hidden
from ar_gen.nn.rope import padded_rows, rope_2d_table
from ar_gen.nn.transformer import Cache, Transformer
from tokenizers.model import dtype

VARIANTS = ("ar", "maskgit")


class PixelDecoder(nnx.Module):
  """VQ token logits from discriminative ids (see the module docstring)."""

  def __init__(self, vq_layout: TokenLayout, id_layout: TokenLayout, variant: str, depth: int, dim: int,
               num_heads: int, *, num_kv_heads: int | None = None, dropout: float = 0.0,
               mlp_hidden: int | None = None, qk_norm: bool = False, attn_impl: str = "auto",
               rope_base: float = 10000.0, norm_eps: float = 1e-5, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    for what, layout in (("VQ tokens", vq_layout), ("discriminative ids", id_layout)):
      if len(layout.maps) != 1 or layout.kind != "ids":
        raise ValueError(f"the pixel decoder needs one map of {what}, got {layout.describe()}")
    if variant not in VARIANTS:
      raise ValueError(f"model.variant={variant!r}: one of {list(VARIANTS)}")
    self.layout, self.id_layout, self.variant = TokenLayout.raster(vq_layout.grid, vq_layout.vocab_size), \
        TokenLayout.raster(id_layout.grid, id_layout.vocab_size), variant
    self.vocab_size, self.mask_id = vq_layout.vocab_size, vq_layout.vocab_size
    self.num_ids, self.num_tokens = self.id_layout.num_tokens, self.layout.num_tokens
    init = nnx.initializers.normal(0.02)
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.id_embeddings = nnx.Embed(id_layout.vocab_size, dim, embedding_init=logical(init, "vocab", "embed"), **kw)
    self.tok_embeddings = nnx.Embed(self.vocab_size + 1, dim, embedding_init=logical(init, "vocab", "embed"), **kw)
    self.bos = nnx.Param(init(rngs.params(), (1, 1, dim), param_dtype))
    self.transformer = Transformer(depth, dim, num_heads, num_kv_heads, mlp_hidden=mlp_hidden, qk_norm=qk_norm,
                                   attn_impl=attn_impl, dropout=dropout, norm_eps=norm_eps, **kw)
    self.norm = RMSNorm(dim, norm_eps, param_dtype=param_dtype)
    self.output = nnx.Linear(dim, self.vocab_size, use_bias=False,
                             kernel_init=logical(nnx.initializers.zeros, "embed", "vocab"), **kw)
    self.head_dim, self.rope_base, self.dtype = dim // num_heads, rope_base, dtype

  # ---------------------------------------------------------------- layout of the sequence
  def groups(self) -> jax.Array:
    """Group ids [M + N]: the prefix 0; the VQ part 1 .. N (ar) or 1 (maskgit)."""
    vq = jnp.arange(1, self.num_tokens + 1) if self.variant == "ar" else jnp.ones(self.num_tokens)
    return jnp.concatenate([jnp.zeros(self.num_ids), vq]).astype(jnp.int32)

  def rope_table(self) -> jax.Array:
    """(cos, sin) [M + N, head_dim / 2, 2]: the id grid's table, then the VQ grid's (ar: bos gets the zero row and
    the position holding v_p has v_p's)."""
    ids = rope_2d_table(*self.id_layout.grid, self.head_dim, self.rope_base, prefix=0)
    prefix = 1 if self.variant == "ar" else 0
    vq = rope_2d_table(*self.layout.grid, self.head_dim, self.rope_base, prefix=prefix)[:self.num_tokens]
    return jnp.concatenate([jnp.asarray(ids), jnp.asarray(vq)])

  def _head(self, h_BLC: jax.Array) -> jax.Array:
    return self.output(self.norm(h_BLC)).astype(jnp.float32)

  def _vq_inputs(self, tokens_BN: jax.Array) -> jax.Array:
    """The VQ part's input embeddings [B, N, C] of the teacher-forced tokens (ar: shifted behind bos)."""
    if self.variant == "maskgit":
      return self.tok_embeddings(tokens_BN)
    return jnp.concatenate([self._bos(tokens_BN.shape[0]), self.tok_embeddings(tokens_BN[:, :-1])], axis=1)

  def _bos(self, batch: int) -> jax.Array:
    return jnp.broadcast_to(self.bos[...].astype(self.dtype), (batch, 1, self.bos.shape[-1]))

  def sequence_logits(self, ids_BM: jax.Array, tokens_BN: jax.Array, *, train: bool = False,
                      rng: jax.Array | None = None) -> jax.Array:
    """Logits [B, M + N, V] of every position (the prefix's included; see the module docstring)."""
    b = ids_BM.shape[0]
    if ids_BM.shape[1] != self.num_ids or tokens_BN.shape[1] != self.num_tokens:
      raise ValueError(f"the pixel decoder reads {self.num_ids} ids and {self.num_tokens} VQ tokens, got "
                       f"{ids_BM.shape[1]} and {tokens_BN.shape[1]}")
    h_BLC = jnp.concatenate([self.id_embeddings(ids_BM), self._vq_inputs(tokens_BN)], axis=1)
    groups_BL = jnp.broadcast_to(self.groups(), (b, h_BLC.shape[1]))
    table = self.rope_table()
    rope = jnp.broadcast_to(table, (b, *table.shape))
    h_BLC, _ = self.transformer(h_BLC, rope, groups_BL, rng=jax.random.fold_in(rng, 0) if train and rng is not None
                                else None)
    return self._head(h_BLC)

  def __call__(self, ids_BM: jax.Array, tokens_BN: jax.Array, *, train: bool = False,
               rng: jax.Array | None = None) -> jax.Array:
    """The VQ part's logits [B, N, V] (ar: teacher-forced; maskgit: `tokens` holds the mask id where masked)."""
    return self.sequence_logits(ids_BM, tokens_BN, train=train, rng=rng)[:, self.num_ids:]

  # ---------------------------------------------------------------- the sampler's step contract (ar)
  def null_condition(self, cond: dict) -> dict:
    raise ValueError("the pixel decoder is not guided (its condition is the whole id sequence): sample it with "
                     "cfg_scale 1")

  def begin(self, cond: dict, spare_slots: int = 0) -> tuple[None, jax.Array, Cache]:
    """Runs the id prefix {"ids": [B, M]} into an empty cache; (no context, bos [B, 1, C], the cache)."""
    ids_BM = cond["ids"]
    b, m = ids_BM.shape
    groups = self.groups()
    cache = self.transformer.init_cache(b, jnp.concatenate([groups, jnp.full(spare_slots, groups[-1])]))
    table = self.rope_table()[:m]
    _, cache = self.transformer(self.id_embeddings(ids_BM), jnp.broadcast_to(table, (b, *table.shape)),
                                jnp.zeros((b, m), jnp.int32), cache, 0)
    return None, self._bos(b), cache

  def step(self, inputs_BlC: jax.Array, index: jax.Array | int, cache: Cache,
           context: None = None) -> tuple[jax.Array, Cache]:
    """Feeds the VQ part's inputs at index .. index + l - 1 (sequence offset M + index); logits [B, l, V]."""
    del context
    b, l = inputs_BlC.shape[:2]
    groups_BL = jnp.broadcast_to(index + 1 + jnp.arange(l, dtype=jnp.int32), (b, l))
    vq_table = padded_rows(self.rope_table()[self.num_ids:], l - 1)
    table = jax.lax.dynamic_slice_in_dim(vq_table, index, l)
    h_BLC, cache = self.transformer(inputs_BlC, jnp.broadcast_to(table, (b, *table.shape)), groups_BL, cache,
                                    self.num_ids + index)
    return self._head(h_BLC), cache

  def feed(self, tokens_B1: jax.Array, index: jax.Array | int, carry: jax.Array, context: None = None) -> jax.Array:
    del index, carry, context
    return self.tok_embeddings(tokens_B1)


def build_pixel_decoder(m: ml_collections.ConfigDict, vq_layout: TokenLayout, id_layout: TokenLayout,
                        rngs: nnx.Rngs) -> PixelDecoder:
  """A PixelDecoder from the `model` section of a config (`size`: LlamaGen's presets, or 'custom')."""
  depth, dim, heads = preset_sizes(m)
  return PixelDecoder(vq_layout, id_layout, m.variant, depth, dim, heads, num_kv_heads=m.num_kv_heads or None,
                      dropout=m.dropout, mlp_hidden=swiglu_hidden(dim, m.mlp_multiple_of), qk_norm=m.qk_norm,
                      attn_impl=m.attn_impl, rope_base=m.rope_base, norm_eps=m.norm_eps, rngs=rngs,
                      dtype=dtype(m.dtype), param_dtype=dtype(m.param_dtype))
