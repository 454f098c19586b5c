"""`ar-gen prepare-imagenet`: ImageNet's standard download -> the `tfds:imagenet2012` array_record dataset, with no
TensorFlow (`tfds build imagenet2012` needs it).

Input, one directory (TFDS's manual_dir), for each split either
  the official archive: `ILSVRC2012_img_train.tar` (a tar of 1000 class tars `nXXXXXXXX.tar`) and
                        `ILSVRC2012_img_val.tar` (50000 flat JPEGs, labelled by the `validation_labels.txt` that
                        TFDS ships with its imagenet2012 builder), or
  a folder tree:        `train/nXXXXXXXX/*.JPEG` and `val/nXXXXXXXX/*.JPEG` (or a flat `val/*.JPEG`, labelled as
                        the archive is).
Output: what TFDS's imagenet2012 builder writes, `DATA_DIR/imagenet2012/<its version>/`: its own `DatasetInfo`
(features `image`, `label`: the 1000 synsets of its labels.txt in its order, `file_name`) and array_record shards
of examples serialized by TFDS's serializer, so `tfds:imagenet2012:train` with `data.data_dir=DATA_DIR` reads it.
Unlike `tfds build`, which orders a split by a hash of the file names, train shard k holds the k-th class present
(files sorted by name) and validation is in file-name order: slices such as `train[:10%]` are not random samples
(training is unaffected: grain shuffles the whole split).

Images: each one is decoded with PIL (one that does not decode is an error naming it); RGB and grayscale JPEGs are
kept byte for byte as TFDS keeps them, the rest (ImageNet's 22 CMYK JPEGs and its PNG named .JPEG) become RGB JPEGs
of quality 100 as TFDS makes them.

Resumable and parallel: worker processes write shards, each to a temporary name then renamed (for a bucket URL
written locally, then uploaded: array_record writes local files), followed by a record `.prepare/<shard>.json` of
its length and of the input it came from; a rerun keeps every shard whose record matches and writes the others.
`dataset_info.json` comes last, so a half-prepared folder is never opened as a dataset (TFDS refuses a version
folder without it). A complete dataset is refused unless `overwrite`, which deletes the version folder first.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import logging
import multiprocessing
import os
import re
import shutil
import tarfile
import tempfile
import time
from typing import Iterator

from PIL import Image

from ar_gen import fileio
from ar_gen.errors import OutputExists, UserError

log = logging.getLogger("ar_gen.data")

NAME = "imagenet2012"
ARCHIVES = {"train": "ILSVRC2012_img_train.tar", "validation": "ILSVRC2012_img_val.tar"}
FOLDERS = {"train": ("train",), "validation": ("val", "validation")}
VALIDATION_LABELS = "datasets/imagenet2012/validation_labels.txt"  # inside the tensorflow_datasets package
VALIDATION_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$")
JPEG_QUALITY = 100  # TFDS's for its CMYK and PNG conversions
IMAGES_PER_SHARD = 1000  # validation: 50 shards
RECORDS = ".prepare"


@dataclasses.dataclass(frozen=True)
class Member:
  """Bytes [offset, offset + size) of `path`: one image, or (`nested`) the tar of one class's images."""

  name: str  # the image's file_name feature, or the class tar's name
  label: int
  path: str
  offset: int
  size: int
  nested: bool = False

  @property
  def where(self) -> str:
    """How errors name it: the file, or the archive and member (a tar member's data never starts at offset 0)."""
    return f"{self.path}: member {self.name}" if self.offset else self.path


@dataclasses.dataclass(frozen=True)
class Shard:
  """One array_record file of a split and the input members it holds, in order."""

  split: str
  filename: str
  members: tuple[Member, ...]

  @property
  def num_bytes(self) -> int:
    return sum(m.size for m in self.members)

  @property
  def digest(self) -> str:
    """Identifies the input (names, labels, byte ranges; not where the input lies)."""
    key = [(m.name, m.label, m.offset, m.size, m.nested) for m in self.members]
    return hashlib.sha1(repr((self.split, self.filename, key)).encode()).hexdigest()


# ------------------------------------------------------------------------------------------------- TFDS's builder
@contextlib.contextmanager
def _absl_errors_only() -> Iterator[None]:
  """Silences TFDS's warning on a version folder without dataset_info.json (what a preparation has until its end)."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def tfds_builder(data_dir: str):
  """TFDS's own imagenet2012 builder under `data_dir`, array_record (it needs TensorFlow only to prepare itself)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with _absl_errors_only():
    return tfds.builder(NAME, data_dir=data_dir, file_format="array_record")


def prepared_dir(data_dir: str) -> str:
  """Where TFDS's builder keeps its dataset under `data_dir`: DATA_DIR/imagenet2012/<version>."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return fileio.join(data_dir, NAME, str(tfds.builder_cls(NAME).VERSION))


def _features():
  """The builder's features (image, label with TFDS's 1000 synsets, file_name), whatever DATA_DIR holds already."""
  with tempfile.TemporaryDirectory() as empty:
    return tfds_builder(empty).info.features


def _template(directory: str, split: str):
  """TFDS's names of the shards of `split` in `directory`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.core.ShardedFileTemplate(data_dir=directory, dataset_name=NAME, split=split,
                                       filetype_suffix="array_record")


def _validation_synsets() -> list[str]:
  """The synset of each validation image, by image number (line n: ILSVRC2012_val_{n:08d}.JPEG)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  path = tfds.core.tfds_path(VALIDATION_LABELS)
  if not path.exists():
    raise UserError(f"{path} is missing: the installed tensorflow_datasets ships no validation labels")
  return path.read_text().split()


# ------------------------------------------------------------------------------------------------- input: members
def _tar_members(path: str) -> list[tarfile.TarInfo]:
  """The files of the uncompressed tar `path`, their headers only (data is read later, by byte range)."""
  try:
    with fileio.open_file(path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
      return [m for m in tar if m.isfile()]
  except tarfile.TarError as e:
    raise UserError(f"{path} is not an uncompressed tar archive ({e})") from e


def _label(synsets: dict[str, int], synset: str, where: str) -> int:
  if synset not in synsets:
    raise UserError(f"{where}: {synset!r} is not one of the 1000 ImageNet synsets (nXXXXXXXX, TFDS's labels.txt)")
  return synsets[synset]


def _validation_label(synsets: dict[str, int], labels: list[str], name: str, where: str) -> int:
  match = VALIDATION_NAME.search(name)
  if not match or not 1 <= int(match.group(1)) <= len(labels):
    raise UserError(f"{where}: {name} is not a validation image name ILSVRC2012_val_00000001.JPEG .. "
                    f"ILSVRC2012_val_{len(labels):08d}.JPEG, so it has no label")
  return _label(synsets, labels[int(match.group(1)) - 1], where)


def _archive_members(split: str, path: str, synsets: dict[str, int]) -> list[Member]:
  members = []
  labels = _validation_synsets() if split == "validation" else []
  for m in _tar_members(path):
    where = f"{path}: member {m.name}"
    if split == "train":
      if not m.name.endswith(".tar"):
        raise UserError(f"{where} is not a class tar nXXXXXXXX.tar")
      label = _label(synsets, os.path.basename(m.name)[:-len(".tar")], where)
      members.append(Member(m.name, label, path, m.offset_data, m.size, nested=True))
    else:
      members.append(Member(m.name, _validation_label(synsets, labels, m.name, where), path, m.offset_data, m.size))
  return members


def _file_members(folder: str, label: int) -> list[Member]:
  files = [n for n in fileio.listdir(folder) if not n.startswith(".")]
  return [Member(n, label, fileio.join(folder, n), 0, fileio.size(fileio.join(folder, n))) for n in files]


def _folder_members(split: str, folder: str, synsets: dict[str, int]) -> list[Member]:
  names = [n for n in fileio.listdir(folder) if not n.startswith(".")]
  classes = [n for n in names if fileio.isdir(fileio.join(folder, n))]
  if split == "validation" and not classes:  # flat, as extracted from the archive
    labels = _validation_synsets()
    return [dataclasses.replace(m, label=_validation_label(synsets, labels, m.name, m.where))
            for m in _file_members(folder, -1)]
  if len(classes) != len(names):
    raise UserError(f"{folder} holds files beside its class folders: {sorted(set(names) - set(classes))[:3]}")
  return [m for c in classes for m in _file_members(fileio.join(folder, c), _label(synsets, c, fileio.join(folder, c)))]


def _split_input(input_dir: str, split: str) -> str:
  """The archive or folder of `split` in `input_dir` (the archive where there are both)."""
  candidates = [fileio.join(input_dir, n) for n in (ARCHIVES[split], *FOLDERS[split])]
  for path in candidates:
    if fileio.exists(path):
      return path
  raise UserError(f"no {split} input in {input_dir}: expected {' or '.join(os.path.basename(c) for c in candidates)}")


def plan(input_dir: str, splits: tuple[str, ...], label_names: list[str],
         images_per_shard: int = IMAGES_PER_SHARD) -> list[Shard]:
  """Every shard of `splits`: one per class tar or class folder of train; validation cut in file-name order."""
  synsets = {s: i for i, s in enumerate(label_names)}
  shards = []
  for split in splits:
    path = _split_input(fileio.absolute(input_dir), split)
    log.info("%s: reading %s", split, path)
    if fileio.isdir(path):
      members = _folder_members(split, path, synsets)
    else:
      members = _archive_members(split, path, synsets)
    if not members:
      raise UserError(f"{path} holds no images")
    members.sort(key=lambda m: m.name)
    if split == "validation":
      groups = [members[i:i + images_per_shard] for i in range(0, len(members), images_per_shard)]
    else:  # one shard per class (its tar, or its folder's files), in label order
      by_label = collections.defaultdict(list)
      for m in members:
        by_label[m.label].append(m)
      groups = [by_label[label] for label in sorted(by_label)]
    template = _template("", split)
    shards += [Shard(split, template.relative_filepath(shard_index=i, num_shards=len(groups)), tuple(g))
               for i, g in enumerate(groups)]
  return shards


# ------------------------------------------------------------------------------------------------- worker: a shard
def tfds_image_bytes(data: bytes, where: str) -> bytes:
  """`data` if it is an RGB or grayscale JPEG, else the image as an RGB JPEG; a UserError naming `where` if PIL cannot
  decode it."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      if im.format == "JPEG" and im.mode in ("RGB", "L"):
        return data
      rgb = im.convert("RGB")
  except Exception as e:  # pylint: disable=broad-except  # PIL raises many types for bad files
    raise UserError(f"{where} is not an image PIL can decode ({type(e).__name__}: {e})") from e
  buffer = io.BytesIO()
  rgb.save(buffer, "JPEG", quality=JPEG_QUALITY)
  return buffer.getvalue()


def _read(member: Member) -> bytes:
  with fileio.open_file(member.path) as f:
    f.seek(member.offset)
    return f.read(member.size)


def _images(shard: Shard) -> Iterator[tuple[str, int, bytes, str]]:
  """(file_name, label, image bytes, where it came from) of each image of the shard, in order."""
  for member in shard.members:
    if not member.nested:
      yield member.name, member.label, _read(member), member.where
      continue
    try:
      with tarfile.open(fileobj=io.BytesIO(_read(member)), mode="r:") as tar:
        for m in sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name):
          yield m.name, member.label, tar.extractfile(m).read(), f"{member.where}/{m.name}"
    except tarfile.TarError as e:
      raise UserError(f"{member.where} is not a tar archive ({e})") from e


_WORKER = {}


def _init_worker(features) -> None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _WORKER.update(features=features,
                 serializer=tfds.core.example_serializer.ExampleSerializer(features.get_serialized_info()))


def _publish(local: str, target: str) -> None:
  """Moves the finished local file `local` to `target` (renamed; uploaded then deleted for a URL)."""
  if fileio.is_url(target):
    with open(local, "rb") as f:
      fileio.write_bytes(target, f.read())
    os.remove(local)
  else:
    os.replace(local, target)


def write_shard(shard: Shard, version_dir: str, staging_dir: str) -> tuple[str, int, int]:
  """Writes one shard and its record; returns (filename, examples, serialized bytes)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  features, serializer = _WORKER["features"], _WORKER["serializer"]
  local = os.path.join(staging_dir, f".{shard.filename}.tmp-{os.getpid()}")
  writer = array_record_module.ArrayRecordWriter(local, "group_size:1")  # TFDS's options: random access
  examples = num_bytes = 0
  try:
    try:
      for file_name, label, data, where in _images(shard):
        example = features.encode_example({"image": tfds_image_bytes(data, where), "label": label,
                                           "file_name": file_name})
        record = serializer.serialize_example(example)
        writer.write(record)
        examples, num_bytes = examples + 1, num_bytes + len(record)
    finally:
      writer.close()
    _publish(local, fileio.join(version_dir, shard.filename))
  finally:
    if os.path.exists(local):
      os.remove(local)
  fileio.write_json(fileio.join(version_dir, RECORDS, shard.filename + ".json"),
                    {"digest": shard.digest, "examples": examples, "num_bytes": num_bytes})
  return shard.filename, examples, num_bytes


# ------------------------------------------------------------------------------------------------- the preparation
def _finished(shards: list[Shard], version_dir: str) -> dict[str, tuple[int, int]]:
  """(examples, bytes) of the shards that an earlier run finished from the same input."""
  if not fileio.isdir(version_dir):
    return {}
  present = set(fileio.listdir(version_dir))
  records_dir = fileio.join(version_dir, RECORDS)
  records = set(fileio.listdir(records_dir)) if RECORDS in present else set()
  done = {}
  for shard in shards:
    if shard.filename in present and shard.filename + ".json" in records:
      record = fileio.read_json(fileio.join(records_dir, shard.filename + ".json"))
      if record["digest"] == shard.digest:
        done[shard.filename] = (record["examples"], record["num_bytes"])
  return done


def _remove_leftovers(version_dir: str, shards: list[Shard]) -> None:
  """Deletes the temporary files of a killed run and the shards of the same splits that this plan has not (an
  earlier run's, from another input)."""
  planned = {s.filename for s in shards}
  prefixes = tuple(f"{NAME}-{split}." for split in {s.split for s in shards})
  for name in fileio.listdir(version_dir) if fileio.isdir(version_dir) else ():
    if (name.startswith(".") and ".tmp-" in name) or (name.startswith(prefixes) and name not in planned):
      fileio.remove(fileio.join(version_dir, name))


def _run(todo: list[Shard], version_dir: str, workers: int, features, bar) -> dict[str, tuple[int, int]]:
  """Writes the shards `todo` in `workers` processes; on a failure lets the running shards finish, then raises it."""
  staging_dir = version_dir if not fileio.is_url(version_dir) else tempfile.mkdtemp(prefix="ar_gen_imagenet_")
  written = {}
  context = multiprocessing.get_context("spawn")  # no fork of a parent that may hold threads (JAX, grain)
  try:
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                initargs=(features,)) as pool:
      futures = {pool.submit(write_shard, s, version_dir, staging_dir): s for s in todo}
      for future in concurrent.futures.as_completed(futures):
        if future.cancelled():
          continue
        if future.exception() is not None:
          for f in futures:
            f.cancel()
          continue
        filename, examples, num_bytes = future.result()
        written[filename] = (examples, num_bytes)
        bar.update(futures[future].num_bytes)
        bar.set_postfix(images=sum(e for e, _ in written.values()), refresh=False)
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    if errors:
      raise errors[0]
  finally:
    if staging_dir != version_dir:
      shutil.rmtree(staging_dir, ignore_errors=True)
  return written


def _prepared_splits(data_dir: str) -> dict:
  """The splits (name -> TFDS SplitInfo) of an array_record imagenet2012 already prepared under `data_dir`; a
  dataset of another file format (`tfds build`'s TFRecord) counts as {'*': None}: it is replaced whole."""
  if not fileio.exists(fileio.join(prepared_dir(data_dir), "dataset_info.json")):
    return {}
  info = tfds_builder(data_dir).info
  if str(getattr(info.file_format, "value", info.file_format)) != "array_record":
    return {"*": None}
  return dict(info.splits.items())


def _write_info(data_dir: str, shards: list[Shard], lengths: dict[str, tuple[int, int]], kept: list) -> None:
  """TFDS writes its dataset_info.json (last), features.json and label.labels.txt for the shards written and the
  `kept` splits (SplitInfos of an earlier preparation)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds_builder(data_dir)
  infos = list(kept)
  for split in dict.fromkeys(s.split for s in shards):
    names = [s.filename for s in shards if s.split == split]
    infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[lengths[n][0] for n in names],
                                     num_bytes=sum(lengths[n][1] for n in names),
                                     filename_template=_template(builder.data_dir, split)))
  builder.info.set_splits(tfds.core.SplitDict(infos))
  builder.info.write_to_directory(builder.data_dir)


def prepare(input_dir: str, data_dir: str, splits: tuple[str, ...] = ("train", "validation"),
            workers: int | None = None, overwrite: bool = False,
            images_per_shard: int = IMAGES_PER_SHARD) -> dict:
  """Prepares `tfds:imagenet2012` under `data_dir` from `input_dir` (see the module docstring); returns a summary."""
  import tqdm  # pylint: disable=g-import-not-at-top
  unknown = sorted(set(splits) - set(ARCHIVES))
  if unknown or not splits:
    raise UserError(f"--splits takes train and/or validation, got {','.join(splits)}")
  data_dir = fileio.absolute(data_dir)
  target = prepared_dir(data_dir)
  existing = _prepared_splits(data_dir)
  again = sorted(set(splits) & set(existing)) or sorted(set(existing) & {"*"})
  if again and not overwrite:
    what = "a TFRecord dataset (replaced whole)" if "*" in again else f"the split(s) {', '.join(again)}"
    raise OutputExists(f"--data-dir {data_dir} already holds a prepared {NAME} ({target}) with {what}; pass "
                       "--overwrite to prepare them again (other array_record splits are kept), or choose another "
                       "directory")
  features = _features()
  shards = plan(input_dir, splits, features["label"].names, images_per_shard)
  if "*" in existing and fileio.exists(target):
    fileio.remove(target)
  kept = [info for name, info in existing.items() if name not in splits and name != "*"]
  fileio.makedirs(fileio.join(target, RECORDS))
  _remove_leftovers(target, shards)
  lengths = _finished(shards, target)
  todo = [s for s in shards if s.filename not in lengths]
  log.info("%s: %d shards to write, %d kept from an earlier run", target, len(todo), len(lengths))
  total = sum(s.num_bytes for s in shards)
  workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
  start = time.time()
  with tqdm.tqdm(total=total, initial=total - sum(s.num_bytes for s in todo), unit="B", unit_scale=True,
                 desc=f"prepare {NAME}", dynamic_ncols=True) as bar:
    written = _run(todo, target, workers, features, bar) if todo else {}
  seconds = time.time() - start
  lengths.update(written)
  _write_info(data_dir, shards, lengths, kept)
  fileio.remove(fileio.join(target, RECORDS))
  images = sum(lengths[s.filename][0] for s in shards)
  new_images = sum(e for e, _ in written.values())
  return {"data_dir": data_dir, "prepared": target,
          "examples": {split: sum(lengths[s.filename][0] for s in shards if s.split == split) for split in splits},
          "shards_written": len(written), "shards_kept": len(shards) - len(written), "images": images,
          "seconds": round(seconds, 1), "images_per_s": round(new_images / seconds, 1) if written else None}
