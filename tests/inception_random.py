"""Deterministic random weights for the FID Inception, in pytorch-fid's state-dict layout (for parity tests).

The golden fixture `tests/fixtures/inception_fid_random.npz` holds pytorch-fid's outputs for these weights (seed 0)
on the images of `random_images`; the weights themselves are regenerated here rather than stored (87 MB).
"""

import numpy as np

from ar_gen.eval.inception_weights import torch_layout

IMAGE_SIZES = ((299, 299), (64, 64), (96, 160))


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
  """He-scaled convolutions, batch norms near identity, a small classifier; float32, in sorted-name order."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in sorted(torch_layout().items()):
    if name.endswith("conv.weight"):
      value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    elif name.endswith(("bn.weight", "bn.running_var")):
      value = rng.uniform(0.8, 1.2, shape)
    elif name.endswith(("bn.bias", "bn.running_mean")):
      value = rng.standard_normal(shape) * 0.1
    elif name == "fc.weight":
      value = rng.standard_normal(shape) / np.sqrt(shape[1])
    else:
      value = rng.standard_normal(shape) * 0.01
    out[name] = value.astype(np.float32)
  return out


def random_images(seed: int = 1) -> dict[tuple[int, int], np.ndarray]:
  """Two images in [0, 1], [2, H, W, 3] float32, per size of IMAGE_SIZES."""
  rng = np.random.default_rng(seed)
  return {size: rng.uniform(0, 1, (2, *size, 3)).astype(np.float32) for size in IMAGE_SIZES}


def random_features(seed: int, n: int, dim: int) -> np.ndarray:
  """Correlated Gaussian features [n, dim], float64."""
  rng = np.random.default_rng(seed)
  return rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) * 0.3 + rng.standard_normal(dim)
