"""The discrete image tokenizer: encoder -> projection -> quantizer (VQ, LFQ or multi-scale) -> projection -> decoder.

One interface for every quantizer:
  `encode(images [B,H,W,C]) -> indices` of shape [B, *token_shape(image_size)] ([B, h, w] for VQ and LFQ, the
  flat scale sequence [B, L] for the multi-scale quantizer), `decode_indices(indices) -> images`,
  `codebook_size`, `grid_shape(image_size)` (the latent's h x w), and `__call__(images) -> (reconstruction, aux)`
  for training. The projections are 1x1 convolutions (LlamaGen) or 3x3 (`quant_conv_kernel=3`, VAR).
`build_tokenizer(config.model, image_channels, rngs)` makes one from a config.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from tokenizers import lfq, multiscale, nets, vq

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
QUANTIZERS = ("vq", "lfq", "multiscale")


def dtype(name: str):
  if name not in DTYPES:
    raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}")
  return DTYPES[name]


class Tokenizer(nnx.Module):
  """Encoder, quantizer and decoder with the shared tokenizer interface."""

  def __init__(self, encoder: nets.Encoder, decoder: nets.Decoder, quantizer, z_channels: int,
               downsample: int, *, quant_conv_kernel: int = 1, rngs: nnx.Rngs, dtype=jnp.float32,
               param_dtype=jnp.float32):
    self.encoder, self.decoder, self.quantizer, self.downsample = encoder, decoder, quantizer, downsample
    self.quant_conv = nets.conv(z_channels, quantizer.code_dim, quant_conv_kernel, rngs, dtype, param_dtype)
    self.post_quant_conv = nets.conv(quantizer.code_dim, z_channels, quant_conv_kernel, rngs, dtype, param_dtype)

  @property
  def codebook_size(self) -> int:
    return self.quantizer.codebook_size

  def grid_shape(self, image_size: int) -> tuple[int, int]:
    if image_size % self.downsample:
      raise ValueError(f"image_size={image_size} must be a multiple of the downsampling factor {self.downsample}")
    return image_size // self.downsample, image_size // self.downsample

  def token_shape(self, image_size: int) -> tuple[int, ...]:
    """The shape of one image's indices."""
    return self.quantizer.token_shape(self.grid_shape(image_size))

  def project(self, images_BHWC: jax.Array) -> jax.Array:
    """Pre-quantization features [B, h, w, code_dim]."""
    return self.quant_conv(self.encoder(images_BHWC))

  def encode(self, images_BHWC: jax.Array) -> jax.Array:
    """Token indices [B, *token_shape]."""
    return self.quantizer.indices(self.project(images_BHWC))

  def decode_codes(self, zq_BhwD: jax.Array) -> jax.Array:
    return self.decoder(self.post_quant_conv(zq_BhwD))

  def decode_indices(self, indices: jax.Array) -> jax.Array:
    """Images [B, H, W, C] in about [-1, 1] from token indices [B, *token_shape]."""
    return self.decode_codes(self.quantizer.embed(indices))

  def decode_prefix(self, indices: jax.Array, num_scales: int) -> jax.Array:
    """Images from the first `num_scales` scales of a multi-scale tokenizer's indices (a progressive preview)."""
    if not hasattr(self.quantizer, "scales"):
      raise ValueError("decoding from a prefix of scales needs a multi-scale tokenizer")
    return self.decode_codes(self.quantizer.embed(indices, num_scales))

  def __call__(self, images_BHWC: jax.Array, train: bool = False,
               rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Reconstruction and aux; `rng` is used by the multi-scale quantizer's prefix training only."""
    z = self.project(images_BHWC)
    if isinstance(self.quantizer, multiscale.MultiScaleQuantizer):
      zq, indices, aux = self.quantizer(z, train=train, rng=rng)
    else:
      zq, indices, aux = self.quantizer(z, train=train)
    aux["indices"] = indices
    aux["decoder_features"] = self.decoder.trunk(self.post_quant_conv(zq))
    return self.decoder.conv_out(aux["decoder_features"]), aux


def build_quantizer(m: ml_collections.ConfigDict, rngs: nnx.Rngs):
  if m.quantizer == "vq":
    return vq.VectorQuantizer(m.codebook_size, m.code_dim, beta=m.beta, normalize=m.get("normalize_codes", True),
                              rngs=rngs, param_dtype=dtype(m.param_dtype))
  if m.quantizer == "lfq":
    return lfq.LookupFreeQuantizer(m.num_bits, commit_weight=m.beta, entropy_weight=m.entropy_weight,
                                   diversity_gamma=m.diversity_gamma, temperature=m.entropy_temperature)
  if m.quantizer == "multiscale":
    return multiscale.MultiScaleQuantizer(m.codebook_size, m.code_dim, tuple(m.scales), beta=m.beta,
                                          phi_ratio=m.phi_ratio, num_phi=m.num_phi, normalize=m.normalize_codes,
                                          prefix_fraction=m.get("prefix_fraction", 0.0), rngs=rngs,
                                          param_dtype=dtype(m.param_dtype))
  raise ValueError(f"model.quantizer must be one of {QUANTIZERS}, got {m.quantizer!r}")


def build_tokenizer(m: ml_collections.ConfigDict, image_channels: int, rngs: nnx.Rngs) -> Tokenizer:
  """A Tokenizer from the `model` section of a config."""
  kw = dict(rngs=rngs, dtype=dtype(m.dtype), param_dtype=dtype(m.param_dtype))
  args = (m.channels, tuple(m.channel_mult), m.num_res_blocks, m.z_channels, m.attention)
  encoder = nets.Encoder(image_channels, *args, **kw)
  decoder = nets.Decoder(image_channels, *args, **kw)
  return Tokenizer(encoder, decoder, build_quantizer(m, rngs), m.z_channels, 2 ** (len(m.channel_mult) - 1),
                   quant_conv_kernel=m.get("quant_conv_kernel", 1), **kw)
