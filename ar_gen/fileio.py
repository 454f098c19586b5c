"""One file layer for local paths and bucket URLs: `gs://`, `s3://`, `az://` (any scheme `etils.epath` reads).

ar-gen reads and writes configs, metrics, checkpoints (Orbax, which uses epath and TensorStore itself), samples,
FID caches and converted weights through these functions, so a work directory or an output may be
`gs://BUCKET/...` as well as a local folder. Local paths go through `os` directly (made absolute, so a path is
the same for every process of a job); URLs go through epath (gcsfs for `gs://` when TensorFlow is absent).

Writes are whole-file and atomic: a local file is written beside itself and renamed over the target; an object
in a bucket is created only when its upload completes. A reader never sees half a file either way.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from typing import Any, Iterator

import numpy as np

PathLike = str | os.PathLike


def _fresh_bucket_listings() -> None:
  """gcsfs caches directory listings for ever by default; a reader beside a trainer (new checkpoints, shards of
  other jobs) must list afresh."""
  try:
    import fsspec  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  for scheme in ("gs", "gcs", "s3"):
    fsspec.config.conf.setdefault(scheme, {}).setdefault("use_listings_cache", False)


_fresh_bucket_listings()


def is_url(path: PathLike) -> bool:
  """True for `scheme://...` paths (buckets), False for local ones."""
  return "://" in os.fspath(path)


def absolute(path: PathLike) -> str:
  """`path` as a string every process reads alike: a URL unchanged, a local path made absolute."""
  path = os.fspath(path)
  return path.rstrip("/") if is_url(path) else os.path.abspath(os.path.expanduser(path))


def epath(path: PathLike):
  """The `etils.epath.Path` of `path` (what Orbax takes)."""
  from etils import epath as epath_lib  # pylint: disable=g-import-not-at-top
  return epath_lib.Path(absolute(path))


def join(path: PathLike, *names: str) -> str:
  """`path/name/...` for a local path or a URL."""
  path = absolute(path)
  return "/".join([path, *names]) if is_url(path) else os.path.join(path, *names)


def basename(path: PathLike) -> str:
  return absolute(path).rstrip("/").rsplit("/", 1)[-1]


def dirname(path: PathLike) -> str:
  path = absolute(path)
  return path.rsplit("/", 1)[0] if is_url(path) else os.path.dirname(path)


def exists(path: PathLike) -> bool:
  return epath(path).exists() if is_url(path) else os.path.lexists(absolute(path))


def isdir(path: PathLike) -> bool:
  return epath(path).is_dir() if is_url(path) else os.path.isdir(absolute(path))


def isfile(path: PathLike) -> bool:
  return epath(path).is_file() if is_url(path) else os.path.isfile(absolute(path))


def makedirs(path: PathLike) -> str:
  """Creates `path` and its parents if needed (a bucket needs none: a no-op there); returns it."""
  path = absolute(path)
  if is_url(path):
    epath(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)
  return path


def listdir(path: PathLike) -> list[str]:
  """Names in the directory `path`, sorted."""
  if is_url(path):
    return sorted(p.name for p in epath(path).iterdir())
  return sorted(os.listdir(absolute(path)))


def remove(path: PathLike) -> None:
  """Deletes the file or directory tree `path` (not following a link)."""
  if is_url(path):
    p = epath(path)
    p.rmtree() if p.is_dir() else p.unlink()
    return
  path = absolute(path)
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  else:
    os.remove(path)


def move(source: PathLike, target: PathLike) -> None:
  """Moves the file or directory tree `source` to `target` (a bucket has no rename: copied, then deleted)."""
  if not (is_url(source) or is_url(target)):
    shutil.move(absolute(source), absolute(target))
    return
  files = list(walk_files(source)) if isdir(source) else [absolute(source)]
  prefix = absolute(source)
  for file in files:
    write_bytes(absolute(target) + file[len(prefix):], read_bytes(file))
  remove(source)


CHUNK_BYTES = 64 << 20


def copy_file(source: PathLike, target: PathLike) -> str:
  """Copies one file, streamed in chunks (either side local or a URL); the target appears whole or not at all."""
  with open_file(source, "rb") as src, _atomic_writer(target) as dst:
    while chunk := src.read(CHUNK_BYTES):
      dst.write(chunk)
  return absolute(target)


@contextlib.contextmanager
def _bucket_writer(path: str) -> Iterator[Any]:
  """An object upload that is committed only if the block ends normally (an fsspec file commits on close even
  after an exception: there the upload is discarded)."""
  f = epath(path).open("wb")
  try:
    yield f
  except BaseException:
    discard = getattr(f, "discard", None)
    if discard is not None:
      discard()
    else:
      f.close()
      if exists(path):
        remove(path)
    raise
  f.close()


@contextlib.contextmanager
def _local_writer(target: str) -> Iterator[Any]:
  """A local file written beside itself and renamed over the target only if the block ends normally."""
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      yield f
    os.replace(tmp, target)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _atomic_writer(path: PathLike):
  """A binary file object for a new `path` (parent created) that appears whole or not at all."""
  path = absolute(path)
  makedirs(dirname(path))
  return _bucket_writer(path) if is_url(path) else _local_writer(path)


def _object_stamp(path: str) -> dict[str, str]:
  """What identifies an object's content: its size and the store's version fields (GCS generation and crc32c,
  S3 ETag, modification times)."""
  import fsspec  # pylint: disable=g-import-not-at-top
  fs, key = fsspec.core.url_to_fs(absolute(path))
  info = fs.info(key)
  fields = ("size", "generation", "crc32c", "md5Hash", "ETag", "mtime", "updated", "LastModified")
  return {k: str(info[k]) for k in fields if info.get(k) is not None}


def local_copy(path: PathLike, cache_dir: PathLike | None = None) -> str:
  """A local path with `path`'s content: `path` itself if local, else a copy cached under `cache_dir` (default
  ~/.cache/ar_gen/files), kept while the remote object's size and version (`_object_stamp`) are those it was
  copied at (for readers that need a local file)."""
  if not is_url(path):
    return absolute(path)
  import hashlib  # pylint: disable=g-import-not-at-top
  root = absolute(cache_dir or os.path.join("~", ".cache", "ar_gen", "files"))
  local = os.path.join(root, hashlib.sha1(absolute(path).encode()).hexdigest()[:16], basename(path))
  stamp = _object_stamp(path)
  if not (os.path.isfile(local) and os.path.isfile(local + ".source.json")
          and read_json(local + ".source.json") == stamp):
    copy_file(path, local)
    write_json(local + ".source.json", stamp)
  return local


def size(path: PathLike) -> int:
  return epath(path).stat().length if is_url(path) else os.path.getsize(absolute(path))


def open_file(path: PathLike, mode: str = "rb"):
  """An open file object for reading (`r`, `rb`); writers use `write_bytes` / `write_text` (atomic)."""
  if any(c in mode for c in "wax+"):
    raise ValueError(f"open_file reads; write {path} with write_bytes or write_text (mode {mode!r})")
  return epath(path).open(mode) if is_url(path) else open(absolute(path), mode)


def read_bytes(path: PathLike) -> bytes:
  with open_file(path, "rb") as f:
    return f.read()


def read_text(path: PathLike) -> str:
  return read_bytes(path).decode()


def read_json(path: PathLike) -> Any:
  return json.loads(read_text(path))


def write_bytes(path: PathLike, data: bytes) -> str:
  """Writes `data` to `path` atomically (parent created); returns the path."""
  with _atomic_writer(path) as f:
    f.write(data)
  return absolute(path)


def write_text(path: PathLike, text: str) -> str:
  return write_bytes(path, text.encode())


def write_json(path: PathLike, value: Any, indent: int | None = 2) -> str:
  return write_text(path, json.dumps(value, indent=indent))


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
  """All arrays of an `.npz` (or `.npy`: key `arr_0`) file, read whole; never unpickles."""
  with open_file(path, "rb") as f:
    data = f.read()
  loaded = np.load(io.BytesIO(data), allow_pickle=False)
  if isinstance(loaded, np.ndarray):
    return {"arr_0": loaded}
  with loaded:
    return {k: loaded[k] for k in loaded.files}


def save_npz(path: PathLike, compressed: bool = False, **arrays: np.ndarray) -> str:
  """Writes `arrays` as an `.npz` atomically; returns the path."""
  buffer = io.BytesIO()
  (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
  return write_bytes(path, buffer.getvalue())


def walk_files(path: PathLike) -> Iterator[str]:
  """Every file below the directory `path`, sorted, as full paths."""
  for name in listdir(path):
    child = join(path, name)
    if isdir(child):
      yield from walk_files(child)
    else:
      yield child
