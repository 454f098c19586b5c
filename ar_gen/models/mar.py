"""MAR (arXiv 2406.11838): a bidirectional encoder-decoder over continuous tokens in a random order, each token
sampled by the per-token diffusion head (`ar_gen.nn.diffusion_mlp.DenoisingMLP`) from the decoder's output z.

Sequence: a buffer of `buffer_size` slots holding the class embedding (a learned `fake_latent` for the null class),
then the L tokens of the grid (`TokenLayout.raster(kind="vectors")`), each projected to the width, plus learned
position embeddings, then a LayerNorm. The encoder sees the buffer and the unmasked tokens only; the decoder sees
the encoder's outputs with a learned mask token at every masked position, plus its own position embeddings; z is
the decoder's output at the L token positions plus a third learned position embedding. MAR drops the masked tokens
from the encoder's sequence; here they are gathered into a fixed number of slots `capacity` (the most a batch can
keep), padding hidden from attention, which gives the same numbers with static shapes.

Training masks a fraction r of each image's tokens in a random order, r from a normal(1, 0.25) truncated to
[mask_ratio_min, 1] (one r per batch, as MAR draws it). Sampling (`MARSteps`) reveals the tokens of a random order
in K steps by MAR's cosine schedule (`mask_schedule`): after step k, floor(L cos(pi / 2 (k + 1) / K)) tokens stay
masked, at least one token is revealed per step and one stays masked until the last; K = L reveals one per step.
Guidance on the diffusion head's noise prediction rises with the revealed tokens (MAR's "linear": 1 + (s - 1)
(L - masked after the step) / L).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ar_gen.layout import Schedule, TokenLayout
from ar_gen.nn.diffusion_mlp import DenoisingMLP
from ar_gen.nn.transformer import Transformer
from ar_gen.nn.vit import LN_EPS, ViTBlock

# MAR's sizes (models/mar.py mar_base / mar_large / mar_huge): (depth of encoder and of decoder, width, heads,
# diffusion MLP depth, diffusion MLP width).
PRESETS = {"B": (12, 768, 12, 6, 1024), "L": (16, 1024, 16, 8, 1280), "H": (20, 1280, 16, 12, 1536)}


def mask_schedule(num_tokens: int, num_steps: int) -> Schedule:
  """MAR's cosine schedule: tokens revealed per step and the guidance progress (L - still masked) / L."""
  if not 1 <= num_steps <= num_tokens:
    raise ValueError(f"MAR samples {num_tokens} tokens in 1 .. {num_tokens} steps, got num_steps={num_steps}")
  masked, sizes, progress = num_tokens, [], []
  for k in range(num_steps):
    target = math.floor(num_tokens * np.cos(math.pi / 2.0 * (k + 1) / num_steps))
    after = max(1, min(masked - 1, target))
    size = masked if k == num_steps - 1 else masked - after
    if size < 1:
      raise ValueError(f"num_steps={num_steps} leaves step {k} of MAR's cosine schedule without tokens to reveal "
                       f"({num_tokens} tokens): use fewer steps")
    sizes.append(size)
    progress.append((num_tokens - after) / num_tokens)
    masked -= size
  return Schedule(tuple(sizes), tuple(progress))


def _pos_embed(n: int, dim: int, rngs: nnx.Rngs, param_dtype) -> nnx.Param:
  return nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, n, dim), param_dtype))


class MARModel(nnx.Module):
  """MAR's transformer and its diffusion head (see the module docstring)."""

  def __init__(self, layout: TokenLayout, num_classes: int, depth: int, dim: int, num_heads: int, *,
               decoder_depth: int | None = None, buffer_size: int = 64, mlp_ratio: float = 4.0,
               mask_ratio_min: float = 0.7, class_dropout: float = 0.1, dropout: float = 0.1,
               head_depth: int = 6, head_width: int = 1024, attn_impl: str = "auto", rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    if len(layout.maps) != 1 or layout.kind != "vectors":
      raise ValueError(f"MAR needs one map of continuous tokens (a KL tokenizer's); the tokenizer gives "
                       f"{layout.describe()} (token ids are the next-token and next-scale families')")
    self.layout = layout
    self.num_classes, self.buffer_size, self.mask_ratio_min = num_classes, buffer_size, mask_ratio_min
    self.class_dropout, self.dropout = class_dropout, dropout
    n, d = layout.num_tokens, layout.token_dim
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    xavier = nnx.initializers.xavier_uniform()
    self.class_emb = nnx.Embed(num_classes, dim, embedding_init=nnx.initializers.normal(0.02), **kw)
    self.fake_latent = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, dim), param_dtype))
    self.z_proj = nnx.Linear(d, dim, kernel_init=xavier, **kw)
    self.z_proj_ln = nnx.LayerNorm(dim, epsilon=LN_EPS, **kw)
    self.encoder_pos = _pos_embed(buffer_size + n, dim, rngs, param_dtype)
    block = lambda _: ViTBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout, attn_impl=attn_impl, **kw)
    self.encoder = Transformer(depth, dim, num_heads, rngs=rngs, make_block=block)
    self.encoder_norm = nnx.LayerNorm(dim, epsilon=LN_EPS, **kw)
    self.decoder_embed = nnx.Linear(dim, dim, kernel_init=xavier, **kw)
    self.mask_token = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, 1, dim), param_dtype))
    self.decoder_pos = _pos_embed(buffer_size + n, dim, rngs, param_dtype)
    self.decoder = Transformer(decoder_depth or depth, dim, num_heads, rngs=rngs, make_block=block)
    self.decoder_norm = nnx.LayerNorm(dim, epsilon=LN_EPS, **kw)
    self.diffusion_pos = _pos_embed(n, dim, rngs, param_dtype)
    self.head = DenoisingMLP(d, dim, head_width, head_depth, **kw)

  @property
  def train_capacity(self) -> int:
    """The most tokens a training batch keeps unmasked: L - ceil(L mask_ratio_min)."""
    n = self.layout.num_tokens
    return n - math.ceil(n * self.mask_ratio_min - 1e-9)

  def class_embedding(self, labels_B: jax.Array) -> jax.Array:
    """The class embedding [B, C]; the null class `num_classes` is the learned fake latent."""
    emb = self.class_emb(jnp.minimum(labels_B, self.num_classes - 1))
    return jnp.where((labels_B == self.num_classes)[:, None], self.fake_latent[...].astype(emb.dtype), emb)

  def encode(self, tokens_BLD: jax.Array, mask_BL: jax.Array, class_BC: jax.Array, capacity: int,
             rng: jax.Array | None = None) -> jax.Array:
    """The encoder's outputs [B, buffer + L, C] at the buffer and the kept tokens (zeros at masked positions)."""
    b, n, _ = tokens_BLD.shape
    x = self.z_proj(tokens_BLD)
    x = jnp.concatenate([jnp.broadcast_to(class_BC[:, None], (b, self.buffer_size, x.shape[-1])).astype(x.dtype), x],
                        axis=1)
    x = self.z_proj_ln(x + self.encoder_pos[...].astype(x.dtype))
    masked = mask_BL.astype(bool)
    # the kept tokens, in sequence order, gathered into `capacity` slots after the buffer; the rest are padding
    slots_BK = jnp.argsort(masked, axis=1, stable=True)[:, :capacity]
    valid_BK = jnp.take_along_axis(~masked, slots_BK, axis=1)
    gather_BS = jnp.concatenate([jnp.broadcast_to(jnp.arange(self.buffer_size), (b, self.buffer_size)),
                                 slots_BK + self.buffer_size], axis=1)
    h = jnp.take_along_axis(x, gather_BS[..., None], axis=1)
    groups_BS = jnp.concatenate([jnp.zeros((b, self.buffer_size), jnp.int32), (~valid_BK).astype(jnp.int32)], 1)
    h, _ = self.encoder(h, None, groups_BS, rng=rng)
    h = self.encoder_norm(h)
    h = jnp.where(groups_BS[..., None] == 0, h, 0)
    out = jnp.zeros_like(x)
    return out.at[jnp.arange(b)[:, None], gather_BS].add(h)

  def decode(self, encoded_BSC: jax.Array, mask_BL: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """z [B, L, C] for the diffusion head from the encoder's outputs."""
    b = mask_BL.shape[0]
    x = self.decoder_embed(encoded_BSC)
    masked_BS = jnp.concatenate([jnp.zeros((b, self.buffer_size), bool), mask_BL.astype(bool)], axis=1)
    x = jnp.where(masked_BS[..., None], self.mask_token[...].astype(x.dtype), x)
    x = x + self.decoder_pos[...].astype(x.dtype)
    x, _ = self.decoder(x, None, jnp.zeros(masked_BS.shape, jnp.int32), rng=rng)
    x = self.decoder_norm(x)[:, self.buffer_size:]
    return x + self.diffusion_pos[...].astype(x.dtype)

  def __call__(self, tokens_BLD: jax.Array, mask_BL: jax.Array, labels_B: jax.Array, *, capacity: int | None = None,
               train: bool = False, rng: jax.Array | None = None) -> jax.Array:
    """z [B, L, C] of tokens with `mask` (1 = masked) for class labels (class dropout to the null in training)."""
    b = tokens_BLD.shape[0]
    if train and self.class_dropout > 0:
      drop = jax.random.uniform(jax.random.fold_in(rng, 0), (b,)) < self.class_dropout
      labels_B = jnp.where(drop, self.num_classes, labels_B)
    keys = (None, None) if not train or rng is None else (jax.random.fold_in(rng, 1), jax.random.fold_in(rng, 2))
    capacity = self.layout.num_tokens if capacity is None else capacity
    encoded = self.encode(tokens_BLD, mask_BL, self.class_embedding(labels_B), capacity, keys[0])
    return self.decode(encoded, mask_BL, keys[1])

  def random_mask(self, b: int, rng: jax.Array) -> jax.Array:
    """A training mask [B, L] (1 = masked): ceil(L r) tokens of a random order per image, r ~ MAR's truncated
    normal on [mask_ratio_min, 1]."""
    n = self.layout.num_tokens
    ratio_key, order_key = jax.random.split(rng)
    ratio = 1.0 + 0.25 * jax.random.truncated_normal(ratio_key, (self.mask_ratio_min - 1.0) / 0.25, 0.0)
    num_masked = jnp.ceil(n * ratio)
    ranks_BL = jnp.argsort(random_orders(order_key, b, n), axis=1)
    return (ranks_BL < num_masked).astype(jnp.float32)


def random_orders(rng: jax.Array, batch: int, num_tokens: int) -> jax.Array:
  """A random permutation of the token positions per image, int32 [B, L]."""
  keys = jax.random.split(rng, batch)
  return jax.vmap(lambda k: jax.random.permutation(k, num_tokens))(keys).astype(jnp.int32)


class MARSteps(nnx.Module):
  """The sampler's step contract for a MARModel: the condition is {"label": [B], "order": [B, L]} (the reveal
  order; the null condition keeps it), the carry the tokens so far in grid order and their mask, step k reveals
  the positions order[:, start_k : start_k + size_k]. The driver's tokens come out in the reveal order:
  `in_grid_order` puts them back."""

  def __init__(self, model: MARModel, num_steps: int):
    self.model, self.layout = model, model.layout
    self.schedule = mask_schedule(model.layout.num_tokens, num_steps)

  def null_condition(self, cond: dict) -> dict:
    return {**cond, "label": jnp.full_like(cond["label"], self.model.num_classes)}

  def begin(self, cond: dict):
    b, n, d = cond["label"].shape[0], self.layout.num_tokens, self.layout.token_dim
    carry = (jnp.zeros((b, n, d), jnp.float32), jnp.ones((b, n), jnp.float32))
    return cond, carry, None

  def _positions(self, group, order_BL: jax.Array, size: int) -> jax.Array:
    start = jnp.asarray(np.cumsum((0,) + self.schedule.sizes[:-1]), jnp.int32)[group]
    return jax.lax.dynamic_slice_in_dim(order_BL, start, size, axis=1)

  def _size(self, group) -> int:
    sizes = set(self.schedule.sizes)
    return self.schedule.sizes[group] if isinstance(group, int) else sizes.pop()

  def step(self, carry, group, cache, context):
    tokens_BLD, mask_BL = carry
    size = self._size(group)
    n = self.layout.num_tokens
    kept = sum(self.schedule.sizes[:group]) if isinstance(group, int) else n  # tokens revealed so far
    z_BLC = self.model(tokens_BLD, mask_BL, context["label"], capacity=max(kept, 1))
    where = self._positions(group, context["order"], size)
    return jnp.take_along_axis(z_BLC, where[..., None], axis=1), cache

  def feed(self, new_BlD: jax.Array, group, carry, context):
    tokens_BLD, mask_BL = carry
    where = self._positions(group, context["order"], self._size(group))
    rows = jnp.arange(tokens_BLD.shape[0])[:, None]
    return tokens_BLD.at[rows, where].set(new_BlD.astype(tokens_BLD.dtype)), mask_BL.at[rows, where].set(0.0)


def in_grid_order(tokens_BLD: jax.Array, order_BL: jax.Array) -> jax.Array:
  """Tokens generated in `order` [B, L] back in grid order."""
  rows = jnp.arange(tokens_BLD.shape[0])[:, None]
  return jnp.zeros_like(tokens_BLD).at[rows, order_BL].set(tokens_BLD)
