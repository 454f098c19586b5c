"""A frozen feature encoder for discriminative tokens: DINOv2's ViT with registers, in NNX (DiGIT's encoder).

`FeatureEncoder` is timm's `vit_base_patch14_reg4_dinov2` architecture at any size: a patch-embedding convolution,
a class token and `num_registers` register tokens, learned position embeddings of the patches only (the class
token's is folded into the token, as timm does; registers have none), pre-norm blocks with LayerScale
(`ar_gen/nn/vit.py`, bidirectional: one group id) and a final LayerNorm (eps 1e-6). The sequence is
[cls, registers, patches]. `features(images, layer)` is DiGIT's feature: the output of block `layer` (0-based;
negative counts from the end: DiGIT's "layer 3" of ViT-B/14 is -3, block 9 of 12, so blocks 10 and 11 never run)
through the final LayerNorm, class and register tokens dropped: [B, h * w, dim]. Input images in [-1, 1] are
mapped to [0, 1], normalised with the section's `mean` / `std` (ImageNet's for DINOv2), then resized to
`input_size` (bicubic; DiGIT normalises, then resizes 256 -> 224).

The position embeddings are stored at the grid of `input_size` (DINOv2 was pretrained at 518 px, 37 x 37 patches):
`resample_pos_embed` resizes a checkpoint's table once, at conversion (`ar_gen/convert/dinov2.py`), with the
antialiased bicubic kernel of timm's `resample_abs_pos_embed` and DINOv2's hub models (DiGIT's own copy resizes
without antialiasing on every call: its released centroids belong to slightly different features).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ar_gen.config import ConfigError
from ar_gen.nn.vit import LN_EPS, ViTBlock

# timm's vit_base_patch14_reg4_dinov2 (DiGIT's encoder): patch 14, 768 wide, 12 blocks of 12 heads, 4 registers.
ARCHS = {"vitb14_reg4": dict(patch_size=14, dim=768, depth=12, num_heads=12, num_registers=4)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def encoder_section(**overrides) -> ml_collections.ConfigDict:
  """The `encoder` section with every key: the architecture (`arch`: a preset of ARCHS, or 'custom' with the sizes
  below), the pixels it sees (`input_size`), DiGIT's feature `layer`, the normalisation, LayerScale's initial value
  and the attention implementation."""
  c = ml_collections.ConfigDict(dict(
      arch="vitb14_reg4", patch_size=14, dim=768, depth=12, num_heads=12, num_registers=4, input_size=224,
      layer=-3, mean=IMAGENET_MEAN, std=IMAGENET_STD, layer_scale=1e-5, attn_impl="auto"))
  c.update(overrides)
  return c


def arch_sizes(e: ml_collections.ConfigDict) -> dict:
  """{patch_size, dim, depth, num_heads, num_registers} of an `encoder` section."""
  if e.arch != "custom" and e.arch not in ARCHS:
    raise ConfigError(f"encoder.arch={e.arch!r}: one of {sorted(ARCHS)} or 'custom'")
  return ARCHS[e.arch] if e.arch != "custom" else {k: e[k] for k in ARCHS["vitb14_reg4"]}


def block_index(layer: int, depth: int) -> int:
  """The 0-based block of `encoder.layer` (negative: from the end), refusing one the encoder does not have."""
  if not -depth <= layer < depth:
    raise ConfigError(f"encoder.layer={layer}: the encoder has {depth} blocks, so the feature layer is one of 0 .. "
                      f"{depth - 1} or -{depth} .. -1 (DiGIT's: -3, the third from last)")
  return layer % depth


class FeatureEncoder(nnx.Module):
  """DINOv2-style ViT with registers (see the module docstring)."""

  def __init__(self, *, patch_size: int, dim: int, depth: int, num_heads: int, num_registers: int, input_size: int,
               channels: int = 3, layer_scale: float | None = 1e-5, attn_impl: str = "auto",
               mean=IMAGENET_MEAN, std=IMAGENET_STD, rngs: nnx.Rngs):
    if input_size % patch_size:
      raise ConfigError(f"encoder.input_size={input_size} is not a multiple of the patch size {patch_size}")
    if len(mean) != channels or len(std) != channels:
      raise ConfigError(f"encoder.mean / encoder.std have {len(mean)} / {len(std)} entries for {channels}-channel "
                        "images")
    self.patch_size, self.dim, self.depth, self.input_size = patch_size, dim, depth, input_size
    self.grid = (input_size // patch_size,) * 2
    self.num_registers = num_registers
    self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    self.patch_embed = nnx.Conv(channels, dim, (patch_size, patch_size), strides=(patch_size, patch_size),
                                padding="VALID", rngs=rngs)
    small = nnx.initializers.normal(1e-6)
    self.cls_token = nnx.Param(small(rngs.params(), (1, 1, dim)))
    self.reg_tokens = nnx.Param(small(rngs.params(), (1, num_registers, dim)))
    self.pos_embed = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, self.grid[0] * self.grid[1], dim)))
    self.layers = nnx.List([ViTBlock(dim, num_heads, layer_scale=layer_scale, attn_impl=attn_impl, rngs=rngs)
                            for _ in range(depth)])
    self.norm = nnx.LayerNorm(dim, epsilon=LN_EPS, rngs=rngs)

  def preprocess(self, images_BHWC: jax.Array) -> jax.Array:
    """Images in [-1, 1] -> the encoder's input: [0, 1], normalised, then resized to `input_size` (bicubic)."""
    x = (images_BHWC.astype(jnp.float32) + 1) / 2
    x = (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)
    if x.shape[1:3] != (self.input_size, self.input_size):
      x = jax.image.resize(x, (x.shape[0], self.input_size, self.input_size, x.shape[3]), "bicubic")
    return x

  def tokens(self, x_BHWC: jax.Array) -> jax.Array:
    """The input sequence [B, 1 + R + h * w, dim] of normalised images at `input_size`: [cls, registers, patches]."""
    b = x_BHWC.shape[0]
    patches = self.patch_embed(x_BHWC).reshape(b, -1, self.dim) + self.pos_embed[...]
    prefix = jnp.concatenate([self.cls_token[...], self.reg_tokens[...]], axis=1)
    return jnp.concatenate([jnp.broadcast_to(prefix, (b, *prefix.shape[1:])), patches], axis=1)

  def hidden(self, x_BHWC: jax.Array, layer: int) -> jax.Array:
    """The residual stream after block `layer` (0-based or negative), all tokens, before the final norm."""
    last = block_index(layer, self.depth)
    h = self.tokens(x_BHWC)
    groups_BL = jnp.zeros(h.shape[:2], jnp.int32)  # one group: bidirectional
    for block in self.layers[:last + 1]:
      h, _ = block(h, None, groups_BL)
    return h

  def features(self, images_BHWC: jax.Array, layer: int) -> jax.Array:
    """DiGIT's features [B, h * w, dim] of images in [-1, 1]: block `layer`, final LayerNorm, patches only."""
    h = self.norm(self.hidden(self.preprocess(images_BHWC), layer))
    return h[:, 1 + self.num_registers:]

  def pooled(self, images_BHWC: jax.Array) -> jax.Array:
    """The mean patch feature [B, dim] after the last block and the final norm (the SSL objective's embedding)."""
    return self.features(images_BHWC, -1).mean(axis=1)


def build_encoder(e: ml_collections.ConfigDict, channels: int, rngs: nnx.Rngs) -> FeatureEncoder:
  """A FeatureEncoder from an `encoder` section (weights to be restored or trained)."""
  sizes = arch_sizes(e)
  block_index(e.layer, sizes["depth"])
  return FeatureEncoder(**sizes, input_size=e.input_size, channels=channels, layer_scale=e.layer_scale,
                        attn_impl=e.attn_impl, mean=tuple(e.mean), std=tuple(e.std), rngs=rngs)


def _cubic_aa_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of PyTorch's antialiased bicubic resize (align_corners False, Keys a = -0.5, the
  kernel stretched by the scale when shrinking, weights normalised per output, taps clipped to the input)."""
  a, scale = -0.5, n_in / n_out
  support = 2.0 * max(scale, 1.0)
  stretch = max(scale, 1.0)

  def cubic(x):
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))

  w = np.zeros((n_out, n_in))
  for i in range(n_out):
    center = scale * (i + 0.5)
    lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
    j = np.arange(lo, hi)
    taps = cubic((j - center + 0.5) / stretch)
    w[i, lo:hi] = taps / taps.sum()
  return w


def resample_pos_embed(pos_1NC: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """A square [1, s * s, C] patch position table resized to `grid` [1, h * w, C] (antialiased bicubic)."""
  n, c = pos_1NC.shape[1:]
  side = int(round(n ** 0.5))
  if side * side != n:
    raise ValueError(f"a position table of {n} patches is not square")
  if (side, side) == tuple(grid):
    return pos_1NC
  table = pos_1NC.reshape(side, side, c).astype(np.float64)
  rows, cols = _cubic_aa_matrix(side, grid[0]), _cubic_aa_matrix(side, grid[1])
  out = np.einsum("hi,wj,ijc->hwc", rows, cols, table)
  return out.reshape(1, grid[0] * grid[1], c).astype(pos_1NC.dtype)
