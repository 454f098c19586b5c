"""Convolutional encoder and decoder of the image tokenizers (VQGAN / LlamaGen layout), NHWC, Flax NNX.

Encoder: conv_in, per level `num_res_blocks` residual blocks at `channels * channel_mult[level]` then a stride-2
downsample (except the last level), a middle block (res, attention, res), norm, swish, conv_out to `z_channels`.
The decoder mirrors it with nearest-neighbour upsampling. With `attention`, self-attention follows every residual
block of the lowest resolution and sits in the middle block, as in LlamaGen's VQ (so its weights port one to one);
without it both are left out. Downsampling factor: 2 ** (len(channel_mult) - 1).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


def _groups(channels: int) -> int:
  return math.gcd(32, channels)


def conv(cin: int, cout: int, kernel: int, rngs: nnx.Rngs, dtype, param_dtype, stride: int = 1) -> nnx.Conv:
  return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride), padding="SAME", dtype=dtype,
                  param_dtype=param_dtype, rngs=rngs)


def norm(channels: int, rngs: nnx.Rngs, dtype, param_dtype) -> nnx.GroupNorm:
  return nnx.GroupNorm(channels, num_groups=_groups(channels), epsilon=1e-6, dtype=dtype, param_dtype=param_dtype,
                       rngs=rngs)


class ResBlock(nnx.Module):
  """GroupNorm-swish-conv twice, with a 1x1 shortcut when the width changes."""

  def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    self.norm1 = norm(cin, rngs, dtype, param_dtype)
    self.conv1 = conv(cin, cout, 3, rngs, dtype, param_dtype)
    self.norm2 = norm(cout, rngs, dtype, param_dtype)
    self.conv2 = conv(cout, cout, 3, rngs, dtype, param_dtype)
    self.shortcut = conv(cin, cout, 1, rngs, dtype, param_dtype) if cin != cout else None

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    h = self.conv1(nnx.swish(self.norm1(x_BHWC)))
    h = self.conv2(nnx.swish(self.norm2(h)))
    return h + (self.shortcut(x_BHWC) if self.shortcut is not None else x_BHWC)


class AttnBlock(nnx.Module):
  """Single-head self-attention over all H*W positions, residual."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    self.norm = norm(channels, rngs, dtype, param_dtype)
    self.qkv = conv(channels, 3 * channels, 1, rngs, dtype, param_dtype)
    self.proj = conv(channels, channels, 1, rngs, dtype, param_dtype)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    b, h, w, c = x_BHWC.shape
    q_BLC, k_BLC, v_BLC = jnp.split(self.qkv(self.norm(x_BHWC)).reshape(b, h * w, 3 * c), 3, axis=-1)
    attn_BLL = jax.nn.softmax(jnp.einsum("blc,bmc->blm", q_BLC, k_BLC) / jnp.sqrt(c).astype(q_BLC.dtype), axis=-1)
    out_BLC = jnp.einsum("blm,bmc->blc", attn_BLL, v_BLC)
    return x_BHWC + self.proj(out_BLC.reshape(b, h, w, c))


class Encoder(nnx.Module):
  """Images [B, H, W, C_in] -> features [B, H/f, W/f, z_channels]."""

  def __init__(self, in_channels: int, channels: int, channel_mult: Sequence[int], num_res_blocks: int,
               z_channels: int, attention: bool, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    self.conv_in = conv(in_channels, channels, 3, rngs, dtype, param_dtype)
    blocks, cin = [], channels
    for level, mult in enumerate(channel_mult):
      cout = channels * mult
      for _ in range(num_res_blocks):
        blocks.append(ResBlock(cin, cout, **kw))
        cin = cout
        if attention and level == len(channel_mult) - 1:
          blocks.append(AttnBlock(cin, **kw))
      if level < len(channel_mult) - 1:
        blocks.append(conv(cin, cin, 3, rngs, dtype, param_dtype, stride=2))
    self.blocks = nnx.List(blocks)
    self.mid = nnx.List([ResBlock(cin, cin, **kw)] + ([AttnBlock(cin, **kw)] if attention else [])
                        + [ResBlock(cin, cin, **kw)])
    self.norm_out = norm(cin, rngs, dtype, param_dtype)
    self.conv_out = conv(cin, z_channels, 3, rngs, dtype, param_dtype)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    h = self.conv_in(x_BHWC)
    for block in list(self.blocks) + list(self.mid):
      h = block(h)
    return self.conv_out(nnx.swish(self.norm_out(h)))


class Decoder(nnx.Module):
  """Features [B, h, w, z_channels] -> images [B, h*f, w*f, C_out]; `trunk` stops before the output conv.
  `level_attention=False` keeps the middle block's attention but none after the residual blocks (MAR's KL-16)."""

  def __init__(self, out_channels: int, channels: int, channel_mult: Sequence[int], num_res_blocks: int,
               z_channels: int, attention: bool, *, level_attention: bool | None = None, rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    cin = channels * channel_mult[-1]
    self.conv_in = conv(z_channels, cin, 3, rngs, dtype, param_dtype)
    self.mid = nnx.List([ResBlock(cin, cin, **kw)] + ([AttnBlock(cin, **kw)] if attention else [])
                        + [ResBlock(cin, cin, **kw)])
    blocks = []
    for level in reversed(range(len(channel_mult))):
      cout = channels * channel_mult[level]
      for _ in range(num_res_blocks + 1):
        blocks.append(ResBlock(cin, cout, **kw))
        cin = cout
        if (attention if level_attention is None else level_attention) and level == len(channel_mult) - 1:
          blocks.append(AttnBlock(cin, **kw))
      if level > 0:
        blocks.append(Upsample(cin, **kw))
    self.blocks = nnx.List(blocks)
    self.norm_out = norm(cin, rngs, dtype, param_dtype)
    self.conv_out = conv(cin, out_channels, 3, rngs, dtype, param_dtype)

  def trunk(self, z_BhwC: jax.Array) -> jax.Array:
    h = self.conv_in(z_BhwC)
    for block in list(self.mid) + list(self.blocks):
      h = block(h)
    return nnx.swish(self.norm_out(h))

  def __call__(self, z_BhwC: jax.Array) -> jax.Array:
    return self.conv_out(self.trunk(z_BhwC))


class Upsample(nnx.Module):
  """Nearest-neighbour x2 then a 3x3 conv."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs, dtype=jnp.float32, param_dtype=jnp.float32):
    self.conv = conv(channels, channels, 3, rngs, dtype, param_dtype)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return self.conv(jnp.repeat(jnp.repeat(x_BHWC, 2, axis=1), 2, axis=2))
