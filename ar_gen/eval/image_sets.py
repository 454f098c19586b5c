"""Image sets for `ar-gen fid` (`--samples`, `--ref`): read into uint8 images, labels or precomputed statistics.

An image set is one of:
- `FILE.npz`, ADM style: images uint8 [N, H, W, C] in `arr_0` (labels, if any, in `arr_1`), or precomputed
  statistics `mu` / `sigma` (FID only: IS, precision and recall need images);
- a folder of images (png, jpg, jpeg, bmp, webp; searched recursively, sorted). A file that cannot be decoded is
  skipped with a warning and counted in `skipped_files`; an empty folder is an error;
- a dataset spec: `tfds:NAME:SPLIT` or `bundled:mnist:SPLIT`, read through the data pipeline at `--image-size`
  (Inception) or the classifier's own size and padding (classifier features).
Sizes may differ within a set. Each set carries a `content_key` (a hash of its file bytes; for dataset specs, of the
spec, data directory and preprocessing), which keys the reference cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os

import ml_collections
import numpy as np
import tqdm
from PIL import Image

from ar_gen.eval import fid_stats

log = logging.getLogger("ar_gen.fid")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclasses.dataclass
class ImageSet:
  """Images (a list: sizes may differ) with optional labels, or precomputed statistics only."""

  name: str
  images: list[np.ndarray] | None = None
  labels: np.ndarray | None = None
  stats: fid_stats.Stats | None = None
  skipped_files: list[str] = dataclasses.field(default_factory=list)
  content_key: str = ""


def _hash_files(paths: list[str]) -> str:
  digest = hashlib.sha256()
  for path in paths:
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  return digest.hexdigest()[:20]


def _load_npz(path: str) -> ImageSet:
  try:
    f = np.load(path)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable .npz ({e})") from e
  with f:
    if "mu" in f.files and "sigma" in f.files:
      mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
      if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not [D] and [D, D]")
      return ImageSet(path, stats=fid_stats.Stats(mu, sigma, -1), content_key=_hash_files([path]))
    if "arr_0" not in f.files:
      raise ValueError(f"{path}: expected images in arr_0 (ADM layout) or mu and sigma, found {f.files}")
    images = f["arr_0"]
    labels = f["arr_1"] if "arr_1" in f.files else None
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
    raise ValueError(f"{path}: arr_0 must be uint8 images [N, H, W, 1 or 3], got {images.dtype} {images.shape}")
  if labels is not None and labels.shape != (len(images),):
    raise ValueError(f"{path}: arr_1 has shape {labels.shape}, expected one label per image ({len(images)},)")
  return ImageSet(path, list(images), labels, content_key=_hash_files([path]))


def _load_folder(path: str) -> ImageSet:
  files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                 if name.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise ValueError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
  images, skipped = [], []
  for file in tqdm.tqdm(files, desc=f"read {os.path.basename(path.rstrip('/'))}", unit="img", leave=False):
    try:
      with open(file, "rb") as fh:
        image = Image.open(io.BytesIO(fh.read()))
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
      skipped.append(file)
      continue
    array = np.asarray(image.convert("L" if image.mode in ("L", "1", "I", "I;16", "F") else "RGB"))
    images.append(array[..., None] if array.ndim == 2 else array)
  if skipped:
    log.warning("%s: skipped %d unreadable image file(s), e.g. %s", path, len(skipped), skipped[:3])
  if not images:
    raise ValueError(f"{path}: none of its {len(files)} image files could be read")
  return ImageSet(path, images, skipped_files=skipped, content_key=_hash_files(files))


def _load_spec(spec: str, data: ml_collections.ConfigDict) -> ImageSet:
  """Every image of a dataset split (each process reads all of it), preprocessed as `data` says."""
  from ar_gen.data import preprocess, sources  # pylint: disable=g-import-not-at-top
  source = sources.get_source(spec, "test", data.get("data_dir") or None)
  images, labels = [], []
  for i in tqdm.tqdm(range(len(source)), desc=f"read {spec}", unit="img", leave=False):
    record = preprocess.preprocess(source[i], image_size=data.image_size, channels=data.channels,
                                   resize=data.get("resize", "crop"))
    images.append(preprocess.to_uint8(record["image"]))
    labels.append(int(record["label"]))
  settings = [spec, data.get("data_dir", ""), data.image_size, data.channels, data.get("resize", "crop")]
  key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:20]
  return ImageSet(spec, images, np.asarray(labels), content_key=key)


def load_image_set(spec: str, data: ml_collections.ConfigDict) -> ImageSet:
  """Reads one `--samples` / `--ref` argument (see the module docstring)."""
  if spec.split(":", 1)[0] in ("tfds", "bundled"):
    return _load_spec(spec, data)
  if os.path.isdir(spec):
    return _load_folder(spec)
  if spec.endswith(".npz"):
    if not os.path.exists(spec):
      raise FileNotFoundError(f"{spec}: no such file")
    return _load_npz(spec)
  raise FileNotFoundError(f"{spec}: not a folder, an .npz file or a tfds:/bundled: dataset spec")
