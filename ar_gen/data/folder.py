"""`folder:PATH` datasets: one sub-folder of images per class, converted once to array_record with a TFDS builder.

The conversion checks every file: a file that PIL cannot decode is an error naming it (nothing is skipped). The
prepared dataset lives under `DATA_DIR/ar_gen_folders/<name>-<hash of path and listing>`, so a changed folder is
converted again. Splits: `train` is the whole folder; `PATH/train`, `PATH/val` style layouts are named by path.
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def scan_folder(path: str) -> tuple[list[str], list[tuple[str, int]]]:
  """Lists class names (sorted sub-folders) and (file, label) pairs; errors name what is wrong."""
  if not os.path.isdir(path):
    raise FileNotFoundError(f"dataset folder {path!r} does not exist")
  classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
  if not classes:
    raise ValueError(f"dataset folder {path!r} has no class sub-folders (expected PATH/<class>/<image files>)")
  files = []
  for label, name in enumerate(classes):
    for fname in sorted(os.listdir(os.path.join(path, name))):
      if not fname.startswith("."):
        files.append((os.path.join(path, name, fname), label))
  if not files:
    raise ValueError(f"dataset folder {path!r} has class folders {classes} but no files in them")
  return classes, files


def check_image(path: str) -> None:
  """Raises ValueError naming `path` if it is not a decodable image."""
  try:
    with Image.open(path) as im:
      im.load()
  except Exception as e:  # PIL raises many types for bad files.
    raise ValueError(f"{path} is not a readable image file ({type(e).__name__}: {e})") from e


@functools.cache
def _builder_class():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class ImageFolderArrayRecord(tfds.core.GeneratorBasedBuilder):
    """Class-per-folder images as a TFDS array_record dataset."""

    VERSION = tfds.core.Version("1.0.0")

    def __init__(self, *, folder: str, classes: list[str], files: list[tuple[str, int]], **kwargs):
      self._folder, self._classes, self._files = folder, classes, files
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(),
              "label": tfds.features.ClassLabel(names=self._classes),
          }),
          supervised_keys=("image", "label"),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, (path, label) in enumerate(self._files):
        with Image.open(path) as im:
          image = np.asarray(im.convert("RGB"))
        yield i, {"image": Image.fromarray(image), "label": label}

  return ImageFolderArrayRecord


def folder_source(path: str, split: str, data_dir: str | None = None):
  """Returns a TFDS data source over `path`, converting it first if needed."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if split != "train":
    raise ValueError(f"folder:{path} has one split, 'train' (use folder:{path}/{split} for a split folder)")
  path = os.path.abspath(path)
  classes, files = scan_folder(path)
  digest = hashlib.sha1(repr((path, [(f, l, os.path.getsize(f)) for f, l in files])).encode()).hexdigest()[:12]
  root = os.path.join(data_dir or tfds.core.constants.DATA_DIR, "ar_gen_folders")
  name = os.path.basename(path.rstrip("/")) or "root"
  builder_dir = os.path.join(root, f"{name}-{digest}")
  builder = _builder_class()(folder=path, classes=classes, files=files, data_dir=builder_dir)
  if not builder.is_prepared():
    for file, _ in files:  # before TFDS starts, so that a bad file is a plain error naming it
      check_image(file)
    builder.download_and_prepare(file_format="array_record")
  return builder.as_data_source(split="train")
