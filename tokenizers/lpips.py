"""LPIPS perceptual distance (Zhang et al. 2018, VGG-16 variant) in JAX, from weights the user provides.

No weights ship with ar-gen and none can be downloaded at run time. `ar-gen convert-lpips VGG_PTH LIN_PTH --out
FILE.npz` turns torchvision's `vgg16-397923af.pth` and the LPIPS package's `weights/v0.1/vgg.pth` into one .npz;
`loss.lpips_weights=FILE.npz` then adds the term to the tokenizer loss.

distance(x, y) = sum_l mean_hw( w_l . (n(f_l(x)) - n(f_l(y)))^2 ), f_l = VGG relu1_2 .. relu5_3, n = unit length
over channels, inputs in [-1, 1] shifted and scaled as LPIPS does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ar_gen import fileio, outputs, torch_files

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = (1, 3, 6, 9, 12)  # indices (among the 13 convolutions) whose ReLU outputs LPIPS compares
TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # `features.{i}` of torchvision's VGG-16
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)


def from_torch_state_dicts(vgg: dict[str, np.ndarray], lin: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Maps torchvision VGG-16 and LPIPS linear-layer state dicts (as numpy) to this module's weight names."""
  out = {}
  for n, i in enumerate(TORCH_CONV_INDICES):
    out[f"conv{n}.kernel"] = np.transpose(np.asarray(vgg[f"features.{i}.weight"]), (2, 3, 1, 0))  # OIHW -> HWIO
    out[f"conv{n}.bias"] = np.asarray(vgg[f"features.{i}.bias"])
  for l in range(len(TAPS)):
    out[f"lin{l}"] = np.asarray(lin[f"lin{l}.model.1.weight"]).reshape(-1)  # [1, C, 1, 1] -> [C]
  return out


def check_weights(weights: dict[str, np.ndarray], source: str) -> None:
  """Raises ValueError naming `source` and the first missing or misshapen entry."""
  cin = 3
  widths = [c for c in VGG16_LAYERS if c != "M"]
  for n, cout in enumerate(widths):
    for key, shape in ((f"conv{n}.kernel", (3, 3, cin, cout)), (f"conv{n}.bias", (cout,))):
      if key not in weights or tuple(weights[key].shape) != shape:
        got = tuple(weights[key].shape) if key in weights else "missing"
        raise ValueError(f"{source}: {key} should have shape {shape}, got {got}")
    cin = cout
  for l, t in enumerate(TAPS):
    if tuple(np.shape(weights.get(f"lin{l}", ()))) != (widths[t],):
      raise ValueError(f"{source}: lin{l} should have shape {(widths[t],)}")


def load_weights(path: str) -> dict[str, jax.Array]:
  """Loads a converted LPIPS .npz; errors name the file."""
  if not fileio.isfile(path):
    raise FileNotFoundError(f"LPIPS weights {path!r} do not exist; make them with `ar-gen convert-lpips`")
  try:
    weights = fileio.load_npz(path)
  except Exception as e:  # a corrupt or non-npz file
    raise ValueError(f"LPIPS weights {path!r} are not a readable .npz file: {e}") from e
  check_weights(weights, path)
  return {k: jnp.asarray(v, jnp.float32) for k, v in weights.items()}


def _features(weights: dict[str, jax.Array], x_BHWC: jax.Array) -> list[jax.Array]:
  taps, h, n = [], x_BHWC, 0
  for width in VGG16_LAYERS:
    if width == "M":
      h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
      continue
    h = jax.lax.conv_general_dilated(h, weights[f"conv{n}.kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h + weights[f"conv{n}.bias"])
    if n in TAPS:
      taps.append(h)
    n += 1
  return taps


def distance(weights: dict[str, jax.Array], x_BHWC: jax.Array, y_BHWC: jax.Array) -> jax.Array:
  """Per-image LPIPS [B] of images in [-1, 1] (1-channel images are repeated to RGB)."""
  def prep(im):
    im = im.astype(jnp.float32)
    im = jnp.repeat(im, 3, axis=-1) if im.shape[-1] == 1 else im
    return (im - SHIFT) / SCALE

  total = 0.0
  for l, (fx, fy) in enumerate(zip(_features(weights, prep(x_BHWC)), _features(weights, prep(y_BHWC)))):
    nx = fx / (jnp.sqrt(jnp.sum(fx * fx, axis=-1, keepdims=True)) + 1e-10)
    ny = fy / (jnp.sqrt(jnp.sum(fy * fy, axis=-1, keepdims=True)) + 1e-10)
    total = total + jnp.mean(jnp.sum(jnp.square(nx - ny) * weights[f"lin{l}"], axis=-1), axis=(1, 2))
  return total


VGG_FILE = "torchvision's VGG-16 weights (vgg16-397923af.pth)"
VGG_KEYS = tuple(f"features.{i}.{p}" for i in TORCH_CONV_INDICES for p in ("weight", "bias"))
LIN_FILE = "the LPIPS package's VGG linear layers (weights/v0.1/vgg.pth)"
LIN_KEYS = tuple(f"lin{l}.model.1.weight" for l in range(len(TAPS)))


def convert_torch_files(vgg_pth: str, lin_pth: str, out: str, overwrite: bool = False) -> str:
  """Reads the two PyTorch files (needs `torch`) and writes the .npz that `load_weights` reads, at `out` exactly.

  Both files are read and checked before `out` is written (through a temporary file, so never half); an existing
  `out` is refused unless `overwrite`.
  """
  out = outputs.claim_file(out, overwrite)
  vgg = torch_files.load_state_dict(vgg_pth, VGG_FILE, VGG_KEYS)
  lin = torch_files.load_state_dict(lin_pth, LIN_FILE, LIN_KEYS)
  weights = from_torch_state_dicts(vgg, lin)
  check_weights(weights, f"{vgg_pth} + {lin_pth}")
  return fileio.save_npz(out, **{k: np.asarray(v) for k, v in weights.items()})
