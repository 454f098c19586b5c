"""The image tokenizer: encoder -> projection -> quantizer (VQ, LFQ, multi-scale; or a KL bottleneck) -> projection ->
decoder.

It implements `tokenizers.protocol.Tokenizer` for every quantizer: `layout` (the quantizer's, checked against the
latent grid of `image_size`), `encode(images [B,H,W,C]) -> tokens [B, L]`, `decode(tokens, num_maps=None) ->
images` (from a prefix of maps for a progressive layout), `codebook_size`, and `__call__(images, train, rng) ->
(reconstruction, aux)` for training. The projections are 1x1 convolutions (LlamaGen) or 3x3
(`quant_conv_kernel=3`, VAR). `build_tokenizer(config.model, image_channels, image_size, rngs)` makes one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen.layout import TokenLayout
from tokenizers import frequency, kl, lfq, multiscale, nets, vq
from tokenizers.protocol import Quantizer

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
QUANTIZERS = {"vq": vq, "lfq": lfq, "multiscale": multiscale, "frequency": frequency, "kl": kl}  # name -> module with default_config, from_config


def dtype(name: str):
  if name not in DTYPES:
    raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)}")
  return DTYPES[name]


class Tokenizer(nnx.Module):
  """Encoder, quantizer and decoder with the shared tokenizer interface."""

  def __init__(self, encoder: nets.Encoder, decoder: nets.Decoder, quantizer: Quantizer, z_channels: int,
               downsample: int, image_size: int, *, quant_conv_kernel: int = 1, double_z: bool = False,
               rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    self.encoder, self.decoder, self.quantizer, self.downsample = encoder, decoder, quantizer, downsample
    grid = latent_grid(image_size, downsample)
    if quantizer.layout.grid != grid:
      raise ValueError(f"the quantizer's finest token map is {quantizer.layout.grid} but {image_size} px images "
                       f"give a {grid} latent (downsampling {downsample}); for a multi-scale quantizer the last scale "
                       "must be the latent's side (model.multiscale.scales)")
    # a KL bottleneck reads mean and log-variance (`input_dim` = 2 D) and gives a latent of D channels
    input_dim = getattr(quantizer, "input_dim", quantizer.code_dim)
    self.quant_conv = nets.conv(2 * z_channels if double_z else z_channels, input_dim, quant_conv_kernel, rngs, dtype,
                                param_dtype)
    self.post_quant_conv = nets.conv(quantizer.code_dim, z_channels, quant_conv_kernel, rngs, dtype, param_dtype)

  @property
  def codebook_size(self) -> int:
    return self.quantizer.codebook_size

  @property
  def layout(self) -> TokenLayout:
    return self.quantizer.layout

  def project(self, images_BHWC: jax.Array) -> jax.Array:
    """Pre-quantization features [B, h, w, code_dim]."""
    return self.quant_conv(self.encoder(images_BHWC))

  def encode(self, images_BHWC: jax.Array) -> jax.Array:
    """Token ids [B, L] (or vectors [B, L, D] of a KL bottleneck)."""
    return self.quantizer.indices(self.project(images_BHWC))

  def decode_codes(self, zq_BhwD: jax.Array) -> jax.Array:
    return self.decoder(self.post_quant_conv(zq_BhwD))

  def decode(self, tokens_BL: jax.Array, num_maps: int | None = None) -> jax.Array:
    """Images [B, H, W, C] in about [-1, 1] from token ids [B, L]; from the first `num_maps` maps if given."""
    if num_maps is not None and not 1 <= num_maps <= len(self.layout.maps):
      raise ValueError(f"num_maps={num_maps}: the layout has {len(self.layout.maps)} maps")
    return self.decode_codes(self.quantizer.embed(tokens_BL, num_maps))

  def __call__(self, images_BHWC: jax.Array, train: bool = False,
               rng: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Reconstruction and aux (`rng`: the quantizer's training randomness, e.g. multi-scale prefix training)."""
    z = self.project(images_BHWC)
    zq, tokens_BL, aux = self.quantizer(z, train=train, rng=rng)
    aux["indices"] = tokens_BL
    aux["decoder_features"] = self.decoder.trunk(self.post_quant_conv(zq))
    return self.decoder.conv_out(aux["decoder_features"]), aux


def latent_grid(image_size: int, downsample: int) -> tuple[int, int]:
  """The latent's h x w for square images of `image_size`."""
  if image_size % downsample:
    raise ValueError(f"image_size={image_size} must be a multiple of the downsampling factor {downsample}")
  return image_size // downsample, image_size // downsample


def build_quantizer(m: ml_collections.ConfigDict, grid: tuple[int, int], rngs: nnx.Rngs) -> Quantizer:
  """The quantizer named by `m.quantizer`, from its own section `m[m.quantizer]`, for a latent of `grid`."""
  if m.quantizer not in QUANTIZERS:
    raise ValueError(f"model.quantizer must be one of {sorted(QUANTIZERS)}, got {m.quantizer!r}")
  if m.quantizer not in m:
    raise ValueError(f"model.quantizer={m.quantizer!r} but the config has no model.{m.quantizer} section: start from "
                     f"tokenizers.config.tokenizer_config(quantizer={m.quantizer!r})")
  return QUANTIZERS[m.quantizer].from_config(m[m.quantizer], grid, rngs, dtype(m.param_dtype))


def build_tokenizer(m: ml_collections.ConfigDict, image_channels: int, image_size: int,
                    rngs: nnx.Rngs) -> Tokenizer:
  """A Tokenizer for `image_size` px images from the `model` section of a config."""
  kw = dict(rngs=rngs, dtype=dtype(m.dtype), param_dtype=dtype(m.param_dtype))
  args = (m.channels, tuple(m.channel_mult), m.num_res_blocks, m.z_channels, m.attention)
  downsample = 2 ** (len(m.channel_mult) - 1)
  grid = latent_grid(image_size, downsample)
  double_z = m.quantizer == "kl"  # LDM's double_z: the encoder gives mean and log-variance features
  encoder = nets.Encoder(image_channels, *args[:3], 2 * m.z_channels if double_z else m.z_channels, args[4], **kw)
  decoder = nets.Decoder(image_channels, *args, level_attention=m.get("decoder_level_attention", m.attention), **kw)
  return Tokenizer(encoder, decoder, build_quantizer(m, grid, rngs), m.z_channels, downsample, image_size,
                   quant_conv_kernel=m.get("quant_conv_kernel", 1), double_z=double_z, **kw)
