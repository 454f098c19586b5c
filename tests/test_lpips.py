"""LPIPS from user-provided weights: conversion layout, metric properties, loading errors, use in the loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenizers import lpips
from tests.conftest import tiny_config


def _random_torch_state_dicts(seed=0):
  rng = np.random.default_rng(seed)
  vgg, lin, cin = {}, {}, 3
  widths = [c for c in lpips.VGG16_LAYERS if c != "M"]
  for i, cout in zip(lpips.TORCH_CONV_INDICES, widths):
    vgg[f"features.{i}.weight"] = rng.normal(0, np.sqrt(2 / (9 * cin)), (cout, cin, 3, 3)).astype(np.float32)
    vgg[f"features.{i}.bias"] = rng.normal(0, 0.01, (cout,)).astype(np.float32)
    cin = cout
  for l, t in enumerate(lpips.TAPS):
    lin[f"lin{l}.model.1.weight"] = rng.uniform(0, 1, (1, widths[t], 1, 1)).astype(np.float32)
  return vgg, lin


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("lpips") / "lpips.npz"
  np.savez(path, **lpips.from_torch_state_dicts(*_random_torch_state_dicts()))
  return str(path)


def test_torch_kernels_are_transposed_to_hwio():
  vgg, lin = _random_torch_state_dicts()
  w = lpips.from_torch_state_dicts(vgg, lin)
  x = np.random.default_rng(1).normal(size=(1, 5, 5, 3)).astype(np.float32)
  ours = jax.lax.conv_general_dilated(x, w["conv0.kernel"], (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))[0, 1, 2]
  torch_w = vgg["features.0.weight"]  # [O, I, kh, kw], cross-correlation at output (1, 2) of a VALID conv
  expected = np.einsum("oikl,kli->o", torch_w, x[0, 1:4, 2:5])
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_distance_is_zero_on_identical_and_positive_otherwise(weights_file):
  w = lpips.load_weights(weights_file)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3), minval=-1, maxval=1)
  y = jnp.clip(x + 0.3 * jax.random.normal(jax.random.PRNGKey(1), x.shape), -1, 1)
  np.testing.assert_allclose(lpips.distance(w, x, x), 0.0, atol=1e-6)
  d_xy, d_yx = lpips.distance(w, x, y), lpips.distance(w, y, x)
  assert bool(jnp.all(d_xy > 0))
  np.testing.assert_allclose(d_xy, d_yx, rtol=1e-5)
  grad = jax.grad(lambda a: jnp.sum(lpips.distance(w, a, y)))(x)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).sum()) > 0


def test_grayscale_images_are_compared_as_rgb(weights_file):
  w = lpips.load_weights(weights_file)
  g = jax.random.uniform(jax.random.PRNGKey(0), (1, 16, 16, 1), minval=-1, maxval=1)
  h = jnp.flip(g, axis=1)
  np.testing.assert_allclose(lpips.distance(w, g, h), lpips.distance(w, jnp.repeat(g, 3, -1), jnp.repeat(h, 3, -1)))


def test_bad_weight_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothere.npz"):
    lpips.load_weights(str(tmp_path / "nothere.npz"))
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="corrupt.npz"):
    lpips.load_weights(str(corrupt))
  partial = tmp_path / "partial.npz"
  weights = lpips.from_torch_state_dicts(*_random_torch_state_dicts())
  del weights["conv4.kernel"]
  np.savez(partial, **weights)
  with pytest.raises(ValueError, match="partial.npz.*conv4.kernel"):
    lpips.load_weights(str(partial))


@pytest.mark.slow  # ~2 min on 2 cores; `make test-all`
def test_lpips_term_enters_the_tokenizer_loss(weights_file):
  from ar_gen.runs.run import Run  # pylint: disable=g-import-not-at-top
  from ar_gen.train import trainer  # pylint: disable=g-import-not-at-top
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (8, 16, 16, 1), minval=-1, maxval=1),
           "label": np.zeros(8, np.int32)}
  losses = []
  for overrides in ((), (f"loss.lpips_path={weights_file}", "loss.lpips_weight=1.0")):
    run = Run(tiny_config("mnist_vq.py", *overrides))
    _, metrics = jax.jit(trainer.make_step(run))(jax.jit(run.init)(jax.random.PRNGKey(0)), batch)
    losses.append(float(metrics["rec_loss"]))
  assert losses[1] > losses[0]


def test_lpips_weight_without_weights_file_is_refused_before_the_workdir_is_written(tmp_path):
  from ar_gen.config import ConfigError  # pylint: disable=g-import-not-at-top
  from ar_gen.train import trainer  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  for overrides, message in (((), "ar-gen convert-lpips"),
                             ((f"loss.lpips_path={tmp_path / 'missing.npz'}",), "missing.npz")):
    workdir = tmp_path / "run"
    with pytest.raises((ConfigError, FileNotFoundError), match=message):
      trainer.train(tiny_config("mnist_vq.py", "loss.lpips_weight=1.0", *overrides), str(workdir))
    assert not (workdir / "config.json").exists()
