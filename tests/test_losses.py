"""Reconstruction and adversarial losses: SSIM / MS-SSIM properties, PSNR, hinge losses, adaptive weight."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenizers import losses


def _images(shape, seed=0):
  return jax.random.uniform(jax.random.PRNGKey(seed), shape, minval=-1, maxval=1)


@pytest.mark.parametrize("shape", [(2, 32, 32, 1), (2, 176, 176, 3)])
def test_ms_ssim_is_one_for_identical_images(shape):
  x = jnp.tanh(2 * _images(shape))
  np.testing.assert_allclose(losses.ms_ssim(x, x), 1.0, atol=1e-5)
  np.testing.assert_allclose(losses.ssim(x, x), 1.0, atol=1e-5)


@pytest.mark.parametrize("size", [32, 176])
def test_ms_ssim_drops_monotonically_with_noise(size):
  yy, xx = jnp.meshgrid(jnp.linspace(-1, 1, size), jnp.linspace(-1, 1, size), indexing="ij")
  x = jnp.stack([jnp.sin(4 * xx) * jnp.cos(3 * yy)] * 3, -1)[None] * 0.8
  noise = jax.random.normal(jax.random.PRNGKey(0), x.shape)
  values = [float(losses.ms_ssim(jnp.clip(x + s * noise, -1, 1), x)[0]) for s in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)]
  assert values[0] == pytest.approx(1.0, abs=1e-5)
  assert all(a > b for a, b in zip(values, values[1:])), values


def test_ms_ssim_scales_follow_the_image_size():
  assert losses.num_ms_ssim_scales(32) == 2
  assert losses.num_ms_ssim_scales(176) == 5
  assert losses.num_ms_ssim_scales(256) == 5


def test_ms_ssim_is_differentiable():
  x = _images((1, 32, 32, 1))
  y = jnp.clip(x + 0.3 * _images((1, 32, 32, 1), seed=1), -1, 1)
  g = jax.grad(lambda a: jnp.mean(losses.ms_ssim(a, y)))(x)
  assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0


def test_psnr_of_a_known_error():
  x = jnp.zeros((1, 4, 4, 1))
  y = x + 0.2  # error 0.1 on the [0, 1] scale -> MSE 0.01 -> 20 dB
  np.testing.assert_allclose(losses.psnr(y, x), 20.0, rtol=1e-5)


def test_hinge_losses():
  np.testing.assert_allclose(losses.hinge_d_loss(jnp.array([2.0, 0.0]), jnp.array([-2.0, 0.5])), 0.5 * (0.5 + 0.75))
  np.testing.assert_allclose(losses.hinge_g_loss(jnp.array([1.0, 3.0])), -2.0)


def test_adaptive_weight_is_the_gradient_norm_ratio():
  w = losses.adaptive_weight(jnp.array([3.0, 4.0]), jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(w, 5.0 / (1.0 + 1e-4), rtol=1e-6)
