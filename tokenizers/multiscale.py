"""Multi-scale residual quantizer (VAR): one shared codebook, K token maps from 1x1 up to the latent's h x w.

Encoding (scale k = 0 .. K-1 of side p_k; the last side is the latent's h):
  r_k   = area_downsample(z - f_hat, p_k)               # what the scales so far have not explained
  idx_k = nearest code of each of the p_k x p_k vectors of r_k
  f_hat = f_hat + phi_k(bicubic_upsample(codes[idx_k], h))
so the decoder's input f_hat after k scales is a coarse-to-fine approximation of z, and decoding from any prefix of
scales gives a progressively sharper preview. phi_k is a 3x3 convolution mixed with the identity
(`(1 - ratio) x + ratio conv(x)`); `num_phi` of them are shared by the K scales, scale k using the one whose tick is
nearest to k / (K - 1) (VAR's partially shared phi: ratio 0.5, 4 convolutions).

Resizing follows PyTorch's `F.interpolate` (`area`, and `bicubic` with A = -0.75, half-pixel centres, clamped
borders, no antialiasing) so that VAR's released weights give VAR's tokens; both are separable linear maps,
applied as two small matrices built once at trace time.

The training loss is VAR's: the mean over scales of `|f_hat_k - sg(t_k)|^2 + beta |sg(f_hat_k) - t_k|^2` with the
target t_k = z (`targets`; a subclass may change it, as the frequency-band quantizer does), and the
straight-through estimator from the full f_hat to z. Tokens of an image are one flat sequence [L] in scale order
(L = sum p_k^2), the layout of the next-scale model (`TokenLayout.square_maps`, one AR step per scale).

It implements the residual-quantizer protocol (`tokenizers/protocol.py`) that the next-scale sampler and
teacher forcing use: `accumulate(f_hat, k, tokens of group k)` adds a group's codes, `next_inputs(f_hat, k)` gives
the inputs of group k, and `teacher_inputs(tokens)` all of them at once.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ar_gen.layout import TokenLayout
from tokenizers.vq import VectorQuantizer, code_histogram

BICUBIC_A = -0.75  # PyTorch's bicubic kernel
VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # VAR's schedule for a 16 x 16 latent


def default_config() -> ml_collections.ConfigDict:
  """`model.multiscale`: the shared codebook (size x width, Euclidean by default as in VAR), beta, the scales
  (sides, coarse to fine, the last = the latent's side), phi convolutions (ratio, how many shared), prefix_fraction
  (the share of a batch decoded from a random proper prefix of scales; 0 in VAR), dead-code restart as for VQ."""
  return ml_collections.ConfigDict(dict(codebook_size=4096, code_dim=32, normalize=False, beta=0.25, scales=VAR_SCALES,
                                        phi_ratio=0.5, num_phi=4, prefix_fraction=0.0, restart_every_steps=0,
                                        restart_threshold=0.03))


def from_config(c: ml_collections.ConfigDict, grid: tuple[int, int], rngs: nnx.Rngs,
                param_dtype=jnp.float32) -> "MultiScaleQuantizer":
  del grid  # the scales say it; the tokenizer checks that the last one is the grid
  return MultiScaleQuantizer(c.codebook_size, c.code_dim, tuple(c.scales), beta=c.beta, phi_ratio=c.phi_ratio,
                             num_phi=c.num_phi, normalize=c.normalize, prefix_fraction=c.prefix_fraction, rngs=rngs,
                             param_dtype=param_dtype)


def _cubic_weights(t: float) -> list[float]:
  """The four weights of positions floor(x) - 1 .. floor(x) + 2 at fractional offset t (Keys kernel, A)."""
  a = BICUBIC_A

  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_matrix(out_size: int, in_size: int) -> np.ndarray:
  """[out, in] matrix of PyTorch's bicubic resize along one axis (align_corners=False)."""
  m = np.zeros((out_size, in_size), np.float64)
  scale = in_size / out_size
  for i in range(out_size):
    src = (i + 0.5) * scale - 0.5
    base = int(np.floor(src))
    for offset, w in zip(range(-1, 3), _cubic_weights(src - base)):
      m[i, min(max(base + offset, 0), in_size - 1)] += w
  return m.astype(np.float32)


def area_matrix(out_size: int, in_size: int) -> np.ndarray:
  """[out, in] matrix of adaptive average pooling along one axis (PyTorch's `area` mode)."""
  m = np.zeros((out_size, in_size), np.float32)
  for i in range(out_size):
    start, end = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
    m[i, start:end] = 1.0 / (end - start)
  return m


def resize(x_BhwD: jax.Array, matrix_ph: np.ndarray) -> jax.Array:
  """Applies a [p, h] resize matrix to both spatial axes of x [B, h, h, D] -> [B, p, p, D]."""
  if matrix_ph.shape[0] == matrix_ph.shape[1]:
    return x_BhwD
  m = jnp.asarray(matrix_ph)
  return jnp.einsum("ph,bhwd,qw->bpqd", m, x_BhwD.astype(jnp.float32), m, precision="highest")


def phi_index(scale: int, num_scales: int, num_phi: int) -> int:
  """Which of the `num_phi` shared convolutions refines scale `scale` of `num_scales` (VAR's ticks)."""
  if num_phi == 4:
    ticks = np.linspace(1 / 3 / num_phi, 1 - 1 / 3 / num_phi, num_phi)
  else:
    ticks = np.linspace(1 / 2 / num_phi, 1 - 1 / 2 / num_phi, num_phi)
  return int(np.argmin(np.abs(ticks - scale / (num_scales - 1))))


class Phi(nnx.Module):
  """(1 - ratio) * x + ratio * conv3x3(x)."""

  def __init__(self, dim: int, ratio: float, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.ratio = ratio
    self.conv = nnx.Conv(dim, dim, (3, 3), padding="SAME", param_dtype=param_dtype, rngs=rngs)

  def __call__(self, h_BhwD: jax.Array) -> jax.Array:
    return (1 - self.ratio) * h_BhwD + self.ratio * self.conv(h_BhwD).astype(jnp.float32)


class MultiScaleQuantizer(nnx.Module):
  """Residual quantization over the square scales `scales` (sides, increasing, the last = the latent's side)."""

  def __init__(self, codebook_size: int, code_dim: int, scales: Sequence[int], *, beta: float = 0.25,
               phi_ratio: float = 0.5, num_phi: int = 4, normalize: bool = False, prefix_fraction: float = 0.0,
               rngs: nnx.Rngs, param_dtype=jnp.float32):
    scales = tuple(int(s) for s in scales)
    if len(scales) < 2 or any(b <= a for a, b in zip(scales, scales[1:])) or scales[0] < 1:
      raise ValueError(f"model.multiscale.scales must be at least two increasing sides, got {scales}")
    if num_phi < 1:
      raise ValueError(f"model.multiscale.num_phi must be at least 1, got {num_phi}")
    if not 0 <= prefix_fraction < 1:
      raise ValueError(f"model.multiscale.prefix_fraction must lie in [0, 1), got {prefix_fraction}")
    self.scales, self.code_dim, self.beta, self.prefix_fraction = scales, code_dim, beta, prefix_fraction
    self.vq = VectorQuantizer(codebook_size, code_dim, (scales[-1], scales[-1]), beta=beta, normalize=normalize,
                              rngs=rngs, param_dtype=param_dtype)
    self.phi = nnx.List([Phi(code_dim, phi_ratio, rngs=rngs, param_dtype=param_dtype) for _ in range(num_phi)])

  @property
  def codebook_size(self) -> int:
    return self.vq.codebook_size

  @property
  def layout(self) -> TokenLayout:
    """The scales' square maps, one AR step per scale."""
    return TokenLayout.square_maps(self.scales, self.codebook_size)

  def _check_side(self, f_BhwD: jax.Array) -> int:
    side = self.scales[-1]
    if f_BhwD.shape[1:3] != (side, side):
      raise ValueError(f"features of spatial shape {f_BhwD.shape[1:3]} do not match the last scale {side}")
    return side

  def downsample(self, f_BhwD: jax.Array, scale: int) -> jax.Array:
    """Area downsampling of full-size features to scale `scale`'s side."""
    return resize(f_BhwD, area_matrix(self.scales[scale], self.scales[-1]))

  def add_scale(self, f_hat_BhwD: jax.Array, scale: int, idx_Bpp: jax.Array) -> jax.Array:
    """f_hat + phi(bicubic_upsample(codes[idx])) for the p x p indices of scale `scale`."""
    side = self.scales[-1]
    h = resize(self.vq.lookup(idx_Bpp), bicubic_matrix(side, self.scales[scale]))
    return f_hat_BhwD + self.phi[phi_index(scale, len(self.scales), len(self.phi))](h)

  def initial_features(self, batch: int) -> jax.Array:
    """f_hat before any group: zeros [B, h, w, D]."""
    side = self.scales[-1]
    return jnp.zeros((batch, side, side, self.code_dim), jnp.float32)

  def accumulate(self, f_hat_BhwD: jax.Array, group: int, tokens_Bl: jax.Array) -> jax.Array:
    """f_hat after adding group `group`'s tokens [B, p^2] (residual-quantizer protocol)."""
    h, w = self.layout.maps[group]
    return self.add_scale(f_hat_BhwD, group, tokens_Bl.reshape(tokens_Bl.shape[0], h, w))

  def next_inputs(self, f_hat_BhwD: jax.Array, group: int) -> jax.Array:
    """Inputs of group `group` > 0 [B, p^2, D]: f_hat of the groups before it, downsampled to its side."""
    return self.downsample(f_hat_BhwD, group).reshape(f_hat_BhwD.shape[0], -1, self.code_dim)

  def targets(self, z_BhwD: jax.Array) -> list[jax.Array]:
    """What f_hat after each scale approximates: the whole latent in VAR (a frequency-band quantizer,
    `tokenizers/frequency.py`, low-passes it to each band)."""
    return [z_BhwD] * len(self.scales)

  def _quantize(self, z_BhwD: jax.Array) -> tuple[list[jax.Array], list[jax.Array], list[jax.Array]]:
    """Per scale: the indices [B, p, p], f_hat after that scale [B, h, w, D] and its target (`targets`)."""
    self._check_side(z_BhwD)
    sg = jax.lax.stop_gradient
    targets = self.targets(z_BhwD.astype(jnp.float32))
    f_hat, indices, f_hats = jnp.zeros_like(targets[0]), [], []
    for k, t in enumerate(targets):
      idx = self.vq.nearest(self.downsample(sg(t) - sg(f_hat), k))
      f_hat = self.add_scale(f_hat, k, idx)
      indices.append(idx), f_hats.append(f_hat)
    return indices, f_hats, targets

  def indices(self, z_BhwD: jax.Array) -> jax.Array:
    """Token ids [B, L]: the scales' index maps, flattened in raster order, concatenated coarse to fine."""
    indices, _, _ = self._quantize(z_BhwD)
    return jnp.concatenate([i.reshape(i.shape[0], -1) for i in indices], axis=1)

  def embed(self, tokens_BL: jax.Array, num_maps: int | None = None) -> jax.Array:
    """Decoder input f_hat [B, h, w, D] from the first `num_maps` scales (all by default) of tokens [B, L]."""
    f_hat = self.initial_features(tokens_BL.shape[0])
    for k, idx in enumerate(self.layout.split(tokens_BL, num_maps)):
      f_hat = self.add_scale(f_hat, k, idx)
    return f_hat

  def teacher_inputs(self, tokens_BL: jax.Array) -> jax.Array:
    """The next-scale model's inputs [B, L - p_0^2, D]: for scales 1 .. K-1, f_hat of the scales before it,
    area-downsampled to its side."""
    f_hat = self.initial_features(tokens_BL.shape[0])
    inputs = []
    for k, idx in enumerate(self.layout.split(tokens_BL, len(self.scales) - 1)):
      f_hat = self.add_scale(f_hat, k, idx)
      inputs.append(self.next_inputs(f_hat, k + 1))
    return jnp.concatenate(inputs, axis=1)

  def __call__(self, z_BhwD: jax.Array, train: bool = False,
               rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array, dict]:
    """Returns (straight-through f_hat, tokens [B, L], aux with losses and the code histogram).

    With `prefix_fraction` > 0 (training only; not in VAR, whose value is 0), that fraction of the batch passes
    f_hat of a random proper prefix of scales to the decoder instead of the full f_hat, so the decoder also
    learns the progressive previews; the loss still asks for the whole image.
    """
    z = z_BhwD.astype(jnp.float32)
    indices, f_hats, targets = self._quantize(z)
    sg = jax.lax.stop_gradient
    codebook_loss = sum(jnp.mean(jnp.square(f - sg(t))) for f, t in zip(f_hats, targets)) / len(f_hats)
    commit_loss = sum(jnp.mean(jnp.square(sg(f) - t)) for f, t in zip(f_hats, targets)) / len(f_hats)
    tokens_BL = jnp.concatenate([i.reshape(i.shape[0], -1) for i in indices], axis=1)
    hist_K = code_histogram(tokens_BL, self.codebook_size)
    if train:
      decay = self.vq.usage_decay
      self.vq.ema_usage[...] = decay * self.vq.ema_usage[...] + (1 - decay) * hist_K / tokens_BL.size
    f_hat = f_hats[-1]
    if train and self.prefix_fraction > 0:
      b, k = z.shape[0], len(self.scales)
      use_B = jax.random.uniform(jax.random.fold_in(rng, 0), (b,)) < self.prefix_fraction
      scale_B = jnp.where(use_B, jax.random.randint(jax.random.fold_in(rng, 1), (b,), 0, k - 1), k - 1)
      f_hat = jnp.stack(f_hats)[scale_B, jnp.arange(b)]
    zq_st = z + sg(f_hat - z)
    aux = {"quant_loss": codebook_loss + self.beta * commit_loss, "codebook_loss": codebook_loss,
           "commit_loss": commit_loss, "code_hist": hist_K, "z": z}
    return zq_st.astype(z_BhwD.dtype), tokens_BL, aux

  def restart_dead_codes(self, z_BhwD: jax.Array, rng: jax.Array, threshold: float) -> jax.Array:
    """The shared codebook's dead-code restart (see VectorQuantizer)."""
    return self.vq.restart_dead_codes(z_BhwD, rng, threshold)
