"""Image sets for `ar-gen fid` (`--samples`, `--ref`): read into uint8 images, labels or precomputed statistics.

An image set is one of:
- `FILE.npz`, ADM style: images uint8 [N, H, W, C] in `arr_0` (integer labels, if any, in `arr_1`), precomputed
  statistics `mu` / `sigma` (FID only: IS, precision and recall need images), or both (ADM's reference batches hold
  statistics of the whole dataset and 10,000 of its images);
- a folder of images (png, jpg, jpeg, bmp, webp; searched recursively, sorted). A file that cannot be decoded is
  skipped with a warning and counted in `skipped_files`; a folder without 2 readable images is an error;
- a dataset spec, as training takes them: `folder:PATH[:SPLIT]` (one sub-folder of images per class, labelled by
  folder), `tfds:NAME:SPLIT` or `bundled:mnist:SPLIT`, read through the data pipeline at `--image-size`
  (Inception) or the classifier's own size and padding (classifier features). `tokens:DIR` is refused: tokens are
  not images.
Files and folders are read through `ar_gen.fileio`, so an npz or an image folder may be a bucket URL (`gs://...`).
Sizes may differ within a set; an image set needs at least 2 images (a covariance). Each set carries a
`content_key` (a hash of its file bytes; for dataset specs, of the spec, data directory and preprocessing, and of a
`folder:` spec's file bytes), which keys the reference cache. `check_spec` and `declared_labels` look at a set
without reading its images, so that `fid.evaluate` can refuse bad input before any work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import zipfile
from typing import Iterator

import ml_collections
import numpy as np
import tqdm
from PIL import Image

from ar_gen import fileio
from ar_gen.data import folder, preprocess, sources
from ar_gen.eval import fid_stats

log = logging.getLogger("ar_gen.fid")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DATASET_KINDS = ("tfds", "bundled", "folder")
NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)  # what numpy raises for a damaged .npz


@dataclasses.dataclass
class ImageSet:
  """Images (a list: sizes may differ) with optional labels, precomputed statistics, or both."""

  name: str
  images: list[np.ndarray] | None = None
  labels: np.ndarray | None = None
  stats: fid_stats.Stats | None = None
  skipped_files: list[str] = dataclasses.field(default_factory=list)
  content_key: str = ""


def _hash_files(paths: list[str]) -> str:
  digest = hashlib.sha256()
  for path in paths:
    with fileio.open_file(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  return digest.hexdigest()[:20]


def prepare_image(image: np.ndarray, data: ml_collections.ConfigDict) -> np.ndarray:
  """uint8 [H, W, C] as the training pipeline prepares it for `data` (size, resize mode, channels), as uint8."""
  record = preprocess.preprocess({"image": image}, image_size=data.image_size, channels=data.channels,
                                 resize=data.get("resize", "crop"))
  return preprocess.to_uint8(record["image"])


@contextlib.contextmanager
def _open_npz(path: str) -> Iterator[np.lib.npyio.NpzFile]:
  """The archive at `path`, its members read when asked for (an image set may be larger than memory twice)."""
  with fileio.open_file(path, "rb") as fh:
    try:
      f = np.load(fh)
    except NPZ_ERRORS as e:
      raise ValueError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from e
    if not isinstance(f, np.lib.npyio.NpzFile):
      raise ValueError(f"{path}: holds a single array {f.shape}, not an .npz archive (arr_0 images or mu / sigma)")
    with f:
      yield f


def _member(f: np.lib.npyio.NpzFile, path: str, key: str) -> np.ndarray:
  try:
    return f[key]
  except NPZ_ERRORS as e:
    raise ValueError(f"{path}: {key} cannot be read ({type(e).__name__}: {e})") from e


def _checked_labels(path: str, labels: np.ndarray, count: int | None) -> np.ndarray:
  if labels.ndim != 1 or (count is not None and len(labels) != count):
    expected = f"({count},)" if count is not None else "[N]"
    raise ValueError(f"{path}: arr_1 has shape {labels.shape}, expected one label per image {expected}")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{path}: arr_1 must hold integer class labels, got {labels.dtype}")
  return labels


def _npz_stats(f: np.lib.npyio.NpzFile, path: str) -> fid_stats.Stats | None:
  """The file's `mu` / `sigma` (count unknown: -1), None when it has not both."""
  if not {"mu", "sigma"} <= set(f.files):
    return None
  mu = np.asarray(_member(f, path, "mu"), np.float64)
  sigma = np.asarray(_member(f, path, "sigma"), np.float64)
  if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
    raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not [D] and [D, D]")
  return fid_stats.Stats(mu, sigma, -1)


def _load_npz(path: str) -> ImageSet:
  with _open_npz(path) as f:
    stats = _npz_stats(f, path)
    if "arr_0" not in f.files:
      if stats is None:
        raise ValueError(f"{path}: expected images in arr_0 (ADM layout) or mu and sigma, found {f.files}")
      return ImageSet(path, stats=stats, content_key=_hash_files([path]))
    images = _member(f, path, "arr_0")
    labels = _member(f, path, "arr_1") if "arr_1" in f.files else None
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
    raise ValueError(f"{path}: arr_0 must be uint8 images [N, H, W, 1 or 3], got {images.dtype} {images.shape}")
  if len(images) < 2:
    raise ValueError(f"{path}: arr_0 holds {len(images)} images; statistics need at least 2")
  if labels is not None:
    labels = _checked_labels(path, labels, len(images))
  return ImageSet(path, list(images), labels, stats, content_key=_hash_files([path]))


def _load_folder(path: str) -> ImageSet:
  files = sorted(file for file in fileio.walk_files(path) if file.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise ValueError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
  images, skipped = [], []
  for file in tqdm.tqdm(files, desc=f"read {fileio.basename(path)}", unit="img", leave=False):
    try:
      image = Image.open(io.BytesIO(fileio.read_bytes(file)))
      image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
      skipped.append(file)
      continue
    array = np.asarray(image.convert("L" if image.mode in ("L", "1", "I", "I;16", "F") else "RGB"))
    images.append(array[..., None] if array.ndim == 2 else array)
  if skipped:
    log.warning("%s: skipped %d unreadable image file(s), e.g. %s", path, len(skipped), skipped[:3])
  if len(images) < 2:
    raise ValueError(f"{path}: {len(images)} of its {len(files)} image files could be read; statistics need at "
                     "least 2")
  return ImageSet(path, images, skipped_files=skipped, content_key=_hash_files(files))


def _folder_files(spec: str) -> tuple[list[str], list[tuple[str, int]]]:
  """Class names and (file, label) pairs of a `folder:` spec, as the data pipeline lists them."""
  _, path, _ = sources.parse_spec(spec, "train")
  return folder.scan_folder(fileio.absolute(path))


def _spec_key(spec: str, data: ml_collections.ConfigDict) -> str:
  settings = [spec, data.get("data_dir", ""), data.image_size, data.channels, data.get("resize", "crop")]
  if _kind(spec) == "folder":  # the folder's content, not only its name
    settings.append(_hash_files([file for file, _ in _folder_files(spec)[1]]))
  return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:20]


def _load_spec(spec: str, data: ml_collections.ConfigDict) -> ImageSet:
  """Every image of a dataset split (each process reads all of it), preprocessed as `data` says."""
  source = sources.get_source(spec, "test", data.get("data_dir") or None)
  if len(source) < 2:
    raise ValueError(f"{spec}: the split holds {len(source)} images; statistics need at least 2")
  images, labels = [], []
  for i in tqdm.tqdm(range(len(source)), desc=f"read {spec}", unit="img", leave=False):
    record = source[i]
    images.append(prepare_image(record["image"], data))
    labels.append(int(record["label"]))
  return ImageSet(spec, images, np.asarray(labels), content_key=_spec_key(spec, data))


def _kind(spec: str) -> str:
  """The dataset kind of a `KIND:...` spec; '' for a path or a URL."""
  kind, sep, _ = spec.partition(":")
  return kind if sep and not fileio.is_url(spec) else ""


def check_spec(spec: str) -> None:
  """Raises, naming `spec`, if it cannot be an image set: refused kinds, missing files and folders."""
  kind = _kind(spec)
  if kind == "tokens":
    raise ValueError(f"{spec}: a tokens: dataset holds a tokenizer's token ids, not images; give the dataset the "
                     "tokens came from (e.g. bundled:mnist:test or folder:PATH), or decode samples to images with "
                     "`ar-gen sample`")
  if kind == "folder":
    _folder_files(spec)
  elif kind not in DATASET_KINDS and not fileio.isdir(spec):
    if not spec.endswith(".npz"):
      raise FileNotFoundError(f"{spec}: not a folder, an .npz file or a folder:/tfds:/bundled: dataset spec")
    if not fileio.isfile(spec):
      raise FileNotFoundError(f"{spec}: no such file")


def declared_labels(spec: str, data: ml_collections.ConfigDict) -> np.ndarray | None:
  """The labels a set can hold, read without its images: an npz's arr_1, a `folder:` spec's class indices, the
  class range of a tfds / bundled dataset; None where there are none or they are not known."""
  kind = _kind(spec)
  if kind == "folder":
    return np.unique([label for _, label in _folder_files(spec)[1]])
  if kind in DATASET_KINDS:
    count = sources.num_classes(sources.get_source(spec, "test", data.get("data_dir") or None))
    return None if count is None else np.arange(count)
  if fileio.isdir(spec):
    return None
  with _open_npz(spec) as f:
    if "arr_1" not in f.files or "arr_0" not in f.files:
      return None
    return _checked_labels(spec, _member(f, spec, "arr_1"), None)


def check_labels(name: str, labels: np.ndarray | None, num_classes: int) -> None:
  """Raises, naming `name` and the labels, if any label is outside the classifier's classes [0, num_classes)."""
  if labels is None:
    return
  labels = np.asarray(labels)
  outside = (labels < 0) | (labels >= num_classes)
  if outside.any():
    bad = np.unique(labels[outside])
    shown = ", ".join(str(int(v)) for v in bad[:10]) + (", ..." if len(bad) > 10 else "")
    raise ValueError(f"{name}: {int(outside.sum())} label(s) outside the classifier's {num_classes} classes "
                     f"(0..{num_classes - 1}): [{shown}]")


def load_image_set(spec: str, data: ml_collections.ConfigDict) -> ImageSet:
  """Reads one `--samples` / `--ref` argument (see the module docstring)."""
  check_spec(spec)
  if _kind(spec) in DATASET_KINDS:
    return _load_spec(spec, data)
  if fileio.isdir(spec):
    return _load_folder(spec)
  return _load_npz(spec)
