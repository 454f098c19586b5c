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
import numpy as np
from flax import nnx

INPUT_SIZE = 299
NUM_LOGITS = 1008
POOL3_DIM = 2048


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class ConvBN(nnx.Module):
  """Convolution without bias, batch norm (eps 1e-3, running statistics), ReLU: torchvision's BasicConv2d.

  The batch norm is applied folded into the convolution (kernel * scale, bias - mean * scale, scale = gamma /
  sqrt(var + eps)); `fold_batch_norm` does that once for good (at load), after which `bn` is None and `conv` holds
  the folded kernel and a bias. A 1 x 1 convolution runs as a matrix product (XLA:CPU runs those ~3x faster than
  a 1 x 1 convolution).
  """

  def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0, *, rngs: nnx.Rngs):
    ph, pw = _pair(padding)
    self.stride, self.padding = _pair(stride), ((ph, ph), (pw, pw))
    self.conv = nnx.Conv(cin, cout, _pair(kernel), strides=self.stride, padding=self.padding, use_bias=False,
                         rngs=rngs)
    self.bn = nnx.BatchNorm(cout, epsilon=1e-3, use_running_average=True, rngs=rngs)

  def folded(self) -> tuple[jax.Array, jax.Array]:
    """(kernel [kh, kw, I, O], bias [O]) of the convolution with the batch norm folded in."""
    kernel = self.conv.kernel[...]
    if self.bn is None:
      return kernel, self.conv.bias[...]
    scale_O = self.bn.scale[...] * jax.lax.rsqrt(self.bn.var[...] + self.bn.epsilon)
    return kernel * scale_O, self.bn.bias[...] - self.bn.mean[...] * scale_O

  def fold_batch_norm(self) -> None:
    kernel, bias = self.folded()
    self.conv.kernel = nnx.Param(kernel)
    self.conv.bias = nnx.Param(bias)
    self.bn = None

  def linear(self, x_BHWC: jax.Array) -> jax.Array:
    """The folded convolution before its bias and ReLU."""
    kernel, _ = self.folded()
    if kernel.shape[:2] == (1, 1) and self.stride == (1, 1) and self.padding == ((0, 0), (0, 0)):
      return x_BHWC @ kernel[0, 0]
    return jax.lax.conv_general_dilated(x_BHWC, kernel, self.stride, self.padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return bias_relu(self.linear(x_BHWC), self)


def fused_1x1(x_BHWC: jax.Array, *convs: ConvBN) -> list[jax.Array]:
  """Several 1 x 1 ConvBNs of the same input as one matrix product; their outputs before bias and ReLU."""
  kernels = [c.folded()[0][0, 0] for c in convs]
  out = x_BHWC @ jnp.concatenate(kernels, axis=-1)
  return jnp.split(out, np.cumsum([k.shape[-1] for k in kernels])[:-1].tolist(), axis=-1)


def bias_relu(y_BHWC: jax.Array, conv: ConvBN) -> jax.Array:
  return jax.nn.relu(y_BHWC + conv.folded()[1])


def max_pool(x_BHWC: jax.Array, stride: int, pad: int = 0) -> jax.Array:
  """3x3 max pool; padding (when any) never wins the max."""
  padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  return jax.lax.reduce_window(x_BHWC, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), padding)


def avg_pool_excluding_padding(x_BHWC: jax.Array) -> jax.Array:
  """3x3 average pool, stride 1, padding 1, dividing by the number of real pixels under the window (TF's)."""
  padding = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x_BHWC, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), padding)
  h, w = x_BHWC.shape[1:3]
  ones_HW = np.pad(np.ones((h, w), np.float32), 1)
  count_HW = sum(ones_HW[i:i + h, j:j + w] for i in range(3) for j in range(3))  # real pixels per window
  return total / jnp.asarray(count_HW, x_BHWC.dtype)[:, :, None]


def pooled_branch(y_BHWC: jax.Array, conv: ConvBN) -> jax.Array:
  """`conv(avg_pool_excluding_padding(x))` from y = `conv.linear(x)`: the 1 x 1 convolution and the average pool
  are both linear and commute, and pooling after the convolution pools fewer channels."""
  return bias_relu(avg_pool_excluding_padding(y_BHWC), conv)


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
    convs = (self.branch1x1, self.branch5x5_1, self.branch3x3dbl_1, self.branch_pool)
    b1, b5, b3, bp = fused_1x1(x, *convs)
    b1, b5, b3 = (bias_relu(y, c) for y, c in zip((b1, b5, b3), convs))
    b5 = self.branch5x5_2(b5)
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(b3))
    return jnp.concatenate([b1, b5, b3, pooled_branch(bp, self.branch_pool)], -1)


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
    convs = (self.branch1x1, self.branch7x7_1, self.branch7x7dbl_1, self.branch_pool)
    b1, b7, d, bp = fused_1x1(x, *convs)
    b1, b7, d = (bias_relu(y, c) for y, c in zip((b1, b7, d), convs))
    b7 = self.branch7x7_3(self.branch7x7_2(b7))
    for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
      d = conv(d)
    return jnp.concatenate([b1, b7, d, pooled_branch(bp, self.branch_pool)], -1)


class InceptionD(nnx.Module):
  def __init__(self, cin: int, *, rngs: nnx.Rngs):
    self.branch3x3_1 = ConvBN(cin, 192, 1, rngs=rngs)
    self.branch3x3_2 = ConvBN(192, 320, 3, stride=2, rngs=rngs)
    self.branch7x7x3_1 = ConvBN(cin, 192, 1, rngs=rngs)
    self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
    self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
    self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2, rngs=rngs)

  def __call__(self, x):
    convs = (self.branch3x3_1, self.branch7x7x3_1)
    b3, b7 = (bias_relu(y, c) for y, c in zip(fused_1x1(x, *convs), convs))
    b3 = self.branch3x3_2(b3)
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
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
    convs = (self.branch1x1, self.branch3x3_1, self.branch3x3dbl_1)
    if self.pool == "avg":  # the pool's 1 x 1 convolution joins the product (it commutes with an average pool)
      b1, b3, d, bp = fused_1x1(x, *convs, self.branch_pool)
      pooled = pooled_branch(bp, self.branch_pool)
    else:
      b1, b3, d = fused_1x1(x, *convs)
      pooled = self.branch_pool(max_pool(x, 1, pad=1))
    b1, b3, d = (bias_relu(y, c) for y, c in zip((b1, b3, d), convs))
    d = self.branch3x3dbl_2(d)
    return jnp.concatenate([b1, self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                            self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), pooled], -1)


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

  def fold_batch_norm(self) -> "InceptionV3":
    """Folds every batch norm into its convolution, for good (at load: the forward pass then skips the fold);
    returns self."""
    for _, module in self.iter_modules():
      if isinstance(module, ConvBN) and module.bn is not None:
        module.fold_batch_norm()
    return self

  def __call__(self, images_BHWC: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pool3 [B, 2048], logits [B, 1008]) for images in [0, 1]."""
    x = resize_input(images_BHWC.astype(jnp.float32)) * 2 - 1
    x = per_image_on_cpu(self.stem, x)
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d):
      x = block(x)
    x = per_image_on_cpu(self.Mixed_6a, x)
    for block in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                  self.Mixed_7c):
      x = block(x)
    pool3_BC = x.mean(axis=(1, 2))
    return pool3_BC, self.fc(pool3_BC)


  def stem(self, x_BHWC: jax.Array) -> jax.Array:
    """299 x 299 x 3 -> 35 x 35 x 192: the convolutions before the first Inception block."""
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x_BHWC)))
    return max_pool(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(max_pool(x, 2))), 2)


def per_image_on_cpu(fn, x_BHWC: jax.Array) -> jax.Array:
  """`fn(x)`, one image at a time (`lax.map`) on a CPU backend. XLA:CPU runs a convolution over large maps
  (35 px and up) of a batch of 16 at about half the speed it runs it image by image (measured 2026-12, 2 cores;
  `docs/benchmarks.md`); elsewhere, and over a batch sharded on several devices, the batch goes through at once."""
  if jax.default_backend() != "cpu" or x_BHWC.shape[0] == 1 or jax.device_count() > 1:
    return fn(x_BHWC)
  return jax.lax.map(lambda x_HWC: fn(x_HWC[None])[0], x_BHWC)


def resize_input(x_BHWC: jax.Array) -> jax.Array:
  """Bilinear resize to 299 x 299 as PyTorch's `F.interpolate(mode='bilinear', align_corners=False)`."""
  b, h, w, c = x_BHWC.shape
  if (h, w) == (INPUT_SIZE, INPUT_SIZE):
    return x_BHWC
  return jax.image.resize(x_BHWC, (b, INPUT_SIZE, INPUT_SIZE, c), "bilinear", antialias=False)
