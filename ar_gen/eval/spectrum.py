"""Power spectra of image sets (`ar-gen spectrum`): how much of an image set's energy sits at low, mid and high
spatial frequencies, for samples and data side by side, to see what a generation order (scales, frequency bands)
changes.

Per image: luminance in [0, 1] (ITU-R 601 weights for RGB), its mean removed, power |FFT2|^2 / (H W) per bin
(so the bins of one image sum to its pixel variance). A bin of integer frequencies (u, v) has the normalized
radius rho = sqrt((u / (H/2))^2 + (v / (W/2))^2): 1 is the Nyquist frequency along an axis, the corners reach
sqrt(2). The set's spectrum is the mean over its images, then
- `profile`: the radially averaged power spectrum, the mean power of the bins in each ring of integer radius
  round(sqrt(u^2 + v^2)) (square images; the corners' rings beyond side/2 included),
- `low` / `mid` / `high`: the fractions of the set's (non-DC) power with rho <= edges[0], edges[0] < rho <=
  edges[1], rho > edges[1] (corners included); default edges 1/3, 2/3 of Nyquist,
- `power`: the mean pixel variance.
Sets are read as `ar-gen fid` reads them (`ar_gen.eval.image_sets`: .npz, image folders, dataset specs).
"""

from __future__ import annotations

import ml_collections
import numpy as np

from ar_gen import fileio, outputs, table
from ar_gen.eval import image_sets

EDGES = (1 / 3, 2 / 3)
LUMA = np.asarray([0.299, 0.587, 0.114])
COLUMNS = [("set", "image set", "s"), ("count", "N", "d"), ("power", "power", ".5f"), ("low", "low", ".4f"),
           ("mid", "mid", ".4f"), ("high", "high", ".4f")]


def luminance(images_NHWC: np.ndarray) -> np.ndarray:
  """uint8 (or [0, 1] float) images [N, H, W, 1 or 3] -> float64 luminance [N, H, W] in [0, 1]."""
  x = np.asarray(images_NHWC, np.float64)
  if np.issubdtype(np.asarray(images_NHWC).dtype, np.integer):
    x = x / 255.0
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f"images must be [N, H, W, 1 or 3], got shape {x.shape}")
  return x[..., 0] if x.shape[-1] == 1 else x @ LUMA


def normalized_radius(height: int, width: int) -> np.ndarray:
  """rho [H, W] of every FFT bin (numpy's FFT order): 1 at an axis's Nyquist frequency."""
  u = np.fft.fftfreq(height) * 2  # cycles per pixel / Nyquist
  v = np.fft.fftfreq(width) * 2
  return np.sqrt(u[:, None] ** 2 + v[None, :] ** 2)


def mean_power(images_NHWC: np.ndarray, chunk: int = 256) -> np.ndarray:
  """The mean power spectrum [H, W] of the images' mean-removed luminance (DC bin 0), `chunk` images at a time."""
  total, count = None, 0
  for start in range(0, len(images_NHWC), chunk):
    y = luminance(images_NHWC[start:start + chunk])
    y = y - y.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(y)) ** 2 / (y.shape[1] * y.shape[2])
    total = power.sum(0) if total is None else total + power.sum(0)
    count += len(y)
  if not count:
    raise ValueError("a spectrum needs at least one image")
  return total / count


def radial_profile(power_HW: np.ndarray) -> np.ndarray:
  """Mean power per ring of integer radius round(|(u, v)|), ring 0 (the DC bin) first."""
  height, width = power_HW.shape
  u, v = np.fft.fftfreq(height) * height, np.fft.fftfreq(width) * width
  ring = np.rint(np.sqrt(u[:, None] ** 2 + v[None, :] ** 2)).astype(int)
  sums, counts = np.bincount(ring.ravel(), power_HW.ravel()), np.bincount(ring.ravel())
  return sums / np.maximum(counts, 1)


def band_fractions(power_HW: np.ndarray, edges: tuple[float, float] = EDGES) -> dict[str, float]:
  """Fractions of the non-DC power at rho <= edges[0], up to edges[1], and beyond (they sum to 1)."""
  if not 0 < edges[0] < edges[1]:
    raise ValueError(f"spectrum band edges must be increasing and positive, got {edges}")
  rho = normalized_radius(*power_HW.shape)
  total = float(power_HW.sum())
  if total <= 0:
    return {"low": 0.0, "mid": 0.0, "high": 0.0}
  low = float(power_HW[(rho > 0) & (rho <= edges[0])].sum()) / total
  mid = float(power_HW[(rho > edges[0]) & (rho <= edges[1])].sum()) / total
  return {"low": low, "mid": mid, "high": 1.0 - low - mid}


def summarize(images_NHWC: np.ndarray, edges: tuple[float, float] = EDGES) -> dict:
  """The set's `power`, band fractions and radial `profile` (a list, for JSON)."""
  power_HW = mean_power(images_NHWC)
  return {"count": len(images_NHWC), "size": list(power_HW.shape), "power": float(power_HW.sum()) /
          power_HW.size, **band_fractions(power_HW, edges), "profile": radial_profile(power_HW).tolist()}


def _stack(image_set: image_sets.ImageSet) -> np.ndarray:
  if not image_set.images:
    raise ValueError(f"{image_set.name}: holds no images (a spectrum needs images, not statistics)")
  shapes = sorted({im.shape for im in image_set.images})
  if len(shapes) > 1:
    raise ValueError(f"{image_set.name}: images of different sizes {shapes[:3]}; a spectrum needs one size "
                     "(read a dataset spec at one --image-size)")
  return np.stack(image_set.images)


def evaluate(specs: list[str], data: ml_collections.ConfigDict, edges: tuple[float, float] = EDGES,
             out: str | None = None, *, overwrite: bool = False) -> dict:
  """The spectrum of every image set (dataset specs read as `data` says); prints a table, writes `out` if given."""
  if not specs:
    raise ValueError("give at least one image set")
  if out:
    out = outputs.claim_file(out, overwrite)
  for spec in specs:
    image_sets.check_spec(spec)
  rows = [{"set": spec, **summarize(_stack(image_sets.load_image_set(spec, data)), edges)} for spec in specs]
  result = {"edges": list(edges), "results": rows}
  print(table.format_table(rows, COLUMNS))
  if out:
    fileio.write_json(out, result)
  return result
