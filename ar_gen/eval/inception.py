"""Inception-v3 as used for FID: the TF 2015 graph as pytorch-fid ports it, in Flax NNX.

The FID variant differs from the classification Inception-v3: average pools in the A, C and first E blocks do not
count padding, the last E block pools with max, and the classifier has 1008 outputs. Input images in [0, 1] are
resized to 299 x 299 (bilinear, half-pixel centres, no antialiasing: PyTorch's `F.interpolate(...,
align_corners=False)`) and scaled to [-1, 1]. `pool3` (2048 features, the FID features) and the 1008 logits (the
Inception score) come from one forward pass. Module and attribute names follow torchvision's, so converting
pytorch-fid's weights is a renaming plus transposes (`ar_gen/eval/inception_weights.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

INPUT_SIZE = 299
NUM_LOGITS = 1008
POOL3_DIM = 2048


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class ConvBN(nnx.Module):
  """Convolution without bias, batch norm (eps 1e-3, running statistics), ReLU: torchvision's BasicConv2d."""

  def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0, *, rngs: nnx.Rngs):
    ph, pw = _pair(padding)
    self.conv = nnx.Conv(cin, cout, _pair(kernel), strides=_pair(stride), padding=((ph, ph), (pw, pw)),
                         use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(cout, epsilon=1e-3, use_running_average=True, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return jax.nn.relu(self.bn(self.conv(x_BHWC)))


def max_pool(x_BHWC: jax.Array, stride: int, pad: int = 0) -> jax.Array:
  """3x3 max pool; padding (when any) never wins the max."""
  padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  return jax.lax.reduce_window(x_BHWC, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), padding)


def avg_pool_excluding_padding(x_BHWC: jax.Array) -> jax.Array:
  """3x3 average pool, stride 1, padding 1, dividing by the number of real pixels under the window (TF's)."""
  padding = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x_BHWC, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), padding)
  ones = jnp.ones((1, *x_BHWC.shape[1:3], 1), x_BHWC.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), padding)
  return total / count


class InceptionA(nnx.Module):
  def __init__(self, cin: int, pool_features: int, *, rngs: nnx.Rngs):
    self.branch1x1 = ConvBN(cin, 64, 1, rngs=rngs)
    self.branch5x5_1 = ConvBN(cin, 48, 1, rngs=rngs)
    self.branch5x5_2 = ConvBN(48, 64, 5, padding=2, rngs=rngs)
    self.branch3x3dbl_1 = ConvBN(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1, rngs=rngs)
    self.branch_pool = ConvBN(cin, pool_features, 1, rngs=rngs)

  def __call__(self, x):
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([self.branch1x1(x), b5, b3, self.branch_pool(avg_pool_excluding_padding(x))], -1)


class InceptionB(nnx.Module):
  def __init__(self, cin: int, *, rngs: nnx.Rngs):
    self.branch3x3 = ConvBN(cin, 384, 3, stride=2, rngs=rngs)
    self.branch3x3dbl_1 = ConvBN(cin, 64, 1, rngs=rngs)
    self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([self.branch3x3(x), b3, max_pool(x, 2)], -1)


class InceptionC(nnx.Module):
  def __init__(self, cin: int, c7: int, *, rngs: nnx.Rngs):
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    self.branch1x1 = ConvBN(cin, 192, 1, rngs=rngs)
    self.branch7x7_1 = ConvBN(cin, c7, 1, rngs=rngs)
    self.branch7x7_2 = ConvBN(c7, c7, **row, rngs=rngs)
    self.branch7x7_3 = ConvBN(c7, 192, **col, rngs=rngs)
    self.branch7x7dbl_1 = ConvBN(cin, c7, 1, rngs=rngs)
    self.branch7x7dbl_2 = ConvBN(c7, c7, **col, rngs=rngs)
    self.branch7x7dbl_3 = ConvBN(c7, c7, **row, rngs=rngs)
    self.branch7x7dbl_4 = ConvBN(c7, c7, **col, rngs=rngs)
    self.branch7x7dbl_5 = ConvBN(c7, 192, **row, rngs=rngs)
    self.branch_pool = ConvBN(cin, 192, 1, rngs=rngs)

  def __call__(self, x):
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    d = x
    for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                 self.branch7x7dbl_5):
      d = conv(d)
    return jnp.concatenate([self.branch1x1(x), b7, d, self.branch_pool(avg_pool_excluding_padding(x))], -1)


class InceptionD(nnx.Module):
  def __init__(self, cin: int, *, rngs: nnx.Rngs):
    self.branch3x3_1 = ConvBN(cin, 192, 1, rngs=rngs)
    self.branch3x3_2 = ConvBN(192, 320, 3, stride=2, rngs=rngs)
    self.branch7x7x3_1 = ConvBN(cin, 192, 1, rngs=rngs)
    self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return jnp.concatenate([b3, b7, max_pool(x, 2)], -1)


class InceptionE(nnx.Module):
  """`pool='avg'` (Mixed_7b, padding not counted) or `'max'` (Mixed_7c: the FID graph's max pool)."""

  def __init__(self, cin: int, pool: str, *, rngs: nnx.Rngs):
    self.pool = pool
    self.branch1x1 = ConvBN(cin, 320, 1, rngs=rngs)
    self.branch3x3_1 = ConvBN(cin, 384, 1, rngs=rngs)
    self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch3x3dbl_1 = ConvBN(cin, 448, 1, rngs=rngs)
    self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1, rngs=rngs)
    self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
    self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
    self.branch_pool = ConvBN(cin, 192, 1, rngs=rngs)

  def __call__(self, x):
    b3 = self.branch3x3_1(x)
    d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = max_pool(x, 1, pad=1) if self.pool == "max" else avg_pool_excluding_padding(x)
    return jnp.concatenate([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pooled)], -1)


class InceptionV3(nnx.Module):
  """The FID Inception-v3. `__call__` takes images in [0, 1], [B, H, W, 3], any H and W."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2, rngs=rngs)
    self.Conv2d_2a_3x3 = ConvBN(32, 32, 3, rngs=rngs)
    self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1, rngs=rngs)
    self.Conv2d_3b_1x1 = ConvBN(64, 80, 1, rngs=rngs)
    self.Conv2d_4a_3x3 = ConvBN(80, 192, 3, rngs=rngs)
    self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
    self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
    self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
    self.Mixed_6a = InceptionB(288, rngs=rngs)
    self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
    self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
    self.Mixed_7a = InceptionD(768, rngs=rngs)
    self.Mixed_7b = InceptionE(1280, "avg", rngs=rngs)
    self.Mixed_7c = InceptionE(2048, "max", rngs=rngs)
    self.fc = nnx.Linear(POOL3_DIM, NUM_LOGITS, rngs=rngs)

  def __call__(self, images_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pool3 [B, 2048], logits [B, 1008]) for images in [0, 1]."""
    x = resize_input(images_BHWC.astype(jnp.float32)) * 2 - 1
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(max_pool(x, 2)))
    x = max_pool(x, 2)
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                  self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
      x = block(x)
    pool3_BC = x.mean(axis=(1, 2))
    return pool3_BC, self.fc(pool3_BC)


def resize_input(x_BHWC: jax.Array) -> jax.Array:
  """Bilinear resize to 299 x 299 as PyTorch's `F.interpolate(mode='bilinear', align_corners=False)`."""
  b, h, w, c = x_BHWC.shape
  if (h, w) == (INPUT_SIZE, INPUT_SIZE):
    return x_BHWC
  return jax.image.resize(x_BHWC, (b, INPUT_SIZE, INPUT_SIZE, c), "bilinear", antialias=False)
