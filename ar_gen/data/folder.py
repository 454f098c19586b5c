"""`folder:PATH` datasets: one sub-folder of images per class, converted once to array_record with a TFDS builder.

The conversion checks every file: a file that PIL cannot decode is an error naming it (nothing is skipped). The
prepared dataset lives under `DATA_DIR/ar_gen_folders/<name>-<hash of path and listing>`, so a changed folder is
converted again. Splits: `train` is the whole folder; `PATH/train`, `PATH/val` style layouts are named by path.

One preparer at a time: processes that open the same unprepared folder at once (two trainings, or every process
of a multi-host job on a shared disk) take an exclusive `fcntl.flock` on `<prepared dir>.lock`; the one that gets
it first prepares, the others wait and then read what it wrote (each re-checks `is_prepared()` once it holds the
lock). The lock file is never deleted (deleting a locked file would let two processes lock two different files);
the operating system releases the lock of a process that dies. TFDS writes into an `incomplete.*` folder and
renames it to the version folder only when it is complete, so a preparer killed midway leaves nothing that
`is_prepared()` accepts; the next preparer deletes such leftovers and prepares again. A data dir that is not a
local path (gs://), or on a file system without flock, cannot be locked: there concurrent first opens are not
coordinated (a warning says so).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from typing import Iterator

import numpy as np
from PIL import Image

from ar_gen import filelock

log = logging.getLogger("ar_gen.data")

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
      self.folder, self.classes, self.files = folder, classes, files
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(),
              "label": tfds.features.ClassLabel(names=self.classes),
          }),
          supervised_keys=("image", "label"),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, (path, label) in enumerate(self.files):
        with Image.open(path) as im:
          image = np.asarray(im.convert("RGB"))
        yield i, {"image": Image.fromarray(image), "label": label}

  return ImageFolderArrayRecord


def folder_builder(path: str, data_dir: str | None = None):
  """The TFDS builder of `folder:PATH` under `data_dir` (prepared or not) and its directory (`ar_gen_folders/...`)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(path)
  classes, files = scan_folder(path)
  digest = hashlib.sha1(repr((path, [(f, l, os.path.getsize(f)) for f, l in files])).encode()).hexdigest()[:12]
  root = os.path.join(data_dir or tfds.core.constants.DATA_DIR, "ar_gen_folders")
  name = os.path.basename(path.rstrip("/")) or "root"
  builder_dir = os.path.join(root, f"{name}-{digest}")
  return _builder_class()(folder=path, classes=classes, files=files, data_dir=builder_dir), builder_dir


def _flock(f, lock_path: str) -> bool:
  """Takes an exclusive flock on the open file `f`, waiting for its holder; False where the file system has none."""
  try:
    locked = filelock.lock(f, wait=False)
  except BlockingIOError:
    log.info("waiting for another process that prepares the dataset (lock %s)", lock_path)
    locked = filelock.lock(f, wait=True)
  if not locked:
    log.warning("%s: the file system has no file locks, so preparation is not locked against other processes",
                lock_path)
  return locked


@contextlib.contextmanager
def _exclusive_lock(lock_path: str) -> Iterator[None]:
  """Holds an exclusive flock on `lock_path` (created if needed; never deleted), waiting for any other holder."""
  if "://" in lock_path:
    log.warning("%s is not on a local file system, so preparation is not locked against other processes",
                lock_path)
    yield
    return
  os.makedirs(os.path.dirname(lock_path), exist_ok=True)
  with open(lock_path, "a") as f:
    locked = _flock(f, lock_path)
    try:
      yield
    finally:
      if locked:
        filelock.unlock(f)


def _remove_leftovers(builder) -> None:
  """Deletes the `incomplete.*` folders that a killed preparer left beside the version folder."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  parent = epath.Path(builder.data_path).parent
  for leftover in parent.glob(f"{tfds.core.constants.INCOMPLETE_PREFIX}*") if parent.exists() else ():
    log.warning("removing %s, left by an interrupted preparation", leftover)
    leftover.rmtree()


def _prepare_once(path: str, data_dir: str | None, builder_dir: str):
  """The prepared builder: prepared here under the lock, or by the process that held the lock before."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with _exclusive_lock(builder_dir + ".lock"):
    builder, _ = folder_builder(path, data_dir)  # anew: a builder made before another preparer finished is stale
    if not builder.is_prepared():
      for file, _ in builder.files:  # before TFDS starts, so that a bad file is a plain error naming it
        check_image(file)
      _remove_leftovers(builder)
      builder.download_and_prepare(file_format="array_record",
                                   download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


def folder_source(path: str, split: str, data_dir: str | None = None):
  """Returns a TFDS data source over `path`, converting it first if needed (one process converts at a time)."""
  if split != "train":
    raise ValueError(f"folder:{path} has one split, 'train' (use folder:{path}/{split} for a split folder)")
  builder, builder_dir = folder_builder(path, data_dir)
  if not builder.is_prepared():
    builder = _prepare_once(path, data_dir, builder_dir)
  return builder.as_data_source(split="train")
