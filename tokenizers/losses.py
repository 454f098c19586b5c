"""Reconstruction and adversarial losses of the tokenizers, all in JAX and differentiable.

Images are [B, H, W, C] in [-1, 1]; SSIM / MS-SSIM work on [0, 1] (data range 1) with an 11-tap Gaussian window
(sigma 1.5), K1 = 0.01, K2 = 0.03, as in Wang et al. MS-SSIM uses the standard five scale weights; an image too
small for five scales (each scale needs at least 11 pixels) uses as many scales as fit, with the weights of the
coarsest scales dropped and the rest renormalised.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WINDOW, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03


def l1(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(x - y))


def l2(x: jax.Array, y: jax.Array) -> jax.Array:
  return jnp.mean(jnp.square(x - y))


def _gaussian_filter(x_BHWC: jax.Array, window: int) -> jax.Array:
  coords = np.arange(window) - (window - 1) / 2
  g = np.exp(-coords ** 2 / (2 * _SIGMA ** 2))
  g = jnp.asarray(g / g.sum(), x_BHWC.dtype)
  c = x_BHWC.shape[-1]
  x = jax.lax.conv_general_dilated(x_BHWC, jnp.tile(g[:, None, None, None], (1, 1, 1, c)), (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
  return jax.lax.conv_general_dilated(x, jnp.tile(g[None, :, None, None], (1, 1, 1, c)), (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def _ssim_parts(x: jax.Array, y: jax.Array, window: int) -> tuple[jax.Array, jax.Array]:
  """Per-image (SSIM, contrast-structure) means [B] for images in [0, 1]."""
  c1, c2 = _K1 ** 2, _K2 ** 2
  mu_x, mu_y = _gaussian_filter(x, window), _gaussian_filter(y, window)
  var_x = _gaussian_filter(x * x, window) - mu_x ** 2
  var_y = _gaussian_filter(y * y, window) - mu_y ** 2
  cov = _gaussian_filter(x * y, window) - mu_x * mu_y
  cs = (2 * cov + c2) / (var_x + var_y + c2)
  ssim = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1) * cs
  return jnp.mean(ssim, axis=(1, 2, 3)), jnp.mean(cs, axis=(1, 2, 3))


def _window_for(x: jax.Array) -> int:
  return min(_WINDOW, min(x.shape[1:3]))


def ssim(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image SSIM [B] of images in [-1, 1]."""
  x, y = (x.astype(jnp.float32) + 1) / 2, (y.astype(jnp.float32) + 1) / 2
  return _ssim_parts(x, y, _window_for(x))[0]


def num_ms_ssim_scales(size: int) -> int:
  """How many of the five MS-SSIM scales fit an image whose shorter side is `size`."""
  scales = 1
  while scales < len(MS_SSIM_WEIGHTS) and size // 2 ** scales >= _WINDOW:
    scales += 1
  return scales


def _avg_pool2(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def ms_ssim(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image multi-scale SSIM [B] of images in [-1, 1] (see the module docstring for small images)."""
  x, y = (x.astype(jnp.float32) + 1) / 2, (y.astype(jnp.float32) + 1) / 2
  scales = num_ms_ssim_scales(min(x.shape[1:3]))
  weights = jnp.asarray(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
  window = _window_for(x)
  values = []
  for s in range(scales):
    ssim_b, cs_b = _ssim_parts(x, y, window)
    values.append(jnp.maximum(ssim_b if s == scales - 1 else cs_b, 1e-4))  # > 0 keeps x ** w differentiable
    if s < scales - 1:
      x, y = _avg_pool2(x), _avg_pool2(y)
  return jnp.prod(jnp.stack(values, axis=-1) ** weights, axis=-1)


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
  """Per-image PSNR [B] in dB of images in [-1, 1], measured on the [0, 1] range."""
  mse = jnp.mean(jnp.square((x.astype(jnp.float32) - y.astype(jnp.float32)) / 2), axis=(1, 2, 3))
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def hinge_d_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
  return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def hinge_g_loss(logits_fake: jax.Array) -> jax.Array:
  return -jnp.mean(logits_fake)


def adaptive_weight(nll_grad: jax.Array, g_grad: jax.Array, max_weight: float = 1e4) -> jax.Array:
  """VQGAN's adaptive GAN weight ||dL_rec/dW|| / ||dL_gan/dW|| at the decoder's last layer, no gradient."""
  weight = jnp.linalg.norm(nll_grad) / (jnp.linalg.norm(g_grad) + 1e-4)
  return jax.lax.stop_gradient(jnp.clip(weight, 0.0, max_weight))
