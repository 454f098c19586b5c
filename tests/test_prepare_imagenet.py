"""`ar-gen prepare-imagenet` on a small fake ImageNet (3 real synsets x 4 train images, one of them CMYK; 6
validation images, one a PNG named .JPEG): TFDS reads what it writes as `imagenet2012`, pixels and labels intact;
the folder tree gives the same files; a rerun redoes only unfinished shards; bad input is named."""

import io
import os
import shutil
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python import array_record_data_source
from PIL import Image
from tensorflow_datasets.proto import tf_example_pb2

from ar_gen import cli, fileio
from ar_gen.data import imagenet, sources
from tests.conftest import CONFIGS
from tests.fake_bucket import fake_bucket

SYNSETS = ("n01440764", "n01443537", "n15075141")  # the first two and the last of TFDS's labels.txt
PER_CLASS, NUM_VAL = 4, 6
CMYK, PNG = "n01443537_1.JPEG", "ILSVRC2012_val_00000003.JPEG"


def _encoded(pixels_HWC: np.ndarray, name: str) -> bytes:
  buffer = io.BytesIO()
  if name == CMYK:
    Image.fromarray(pixels_HWC, "RGB").convert("CMYK").save(buffer, "JPEG", quality=95)
  else:
    Image.fromarray(pixels_HWC).save(buffer, "PNG" if name == PNG else "JPEG", quality=95)
  return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def _validation_synsets() -> list[str]:
  return tfds.core.tfds_path(imagenet.VALIDATION_LABELS).read_text().split()[:NUM_VAL]


def _write_fake(root, images: dict[tuple[str, str], bytes]) -> None:
  """The official archives and the folder tree of the same images under root/archives and root/folders."""
  os.makedirs(root / "archives")
  with tarfile.open(root / "archives" / imagenet.ARCHIVES["train"], "w") as outer:
    for synset in SYNSETS:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as tar:
        for (split, name), data in reversed(images.items()):  # not in name order: the shard is
          if split == "train" and name.startswith(synset):
            _add(tar, name, data)
      _add(outer, f"{synset}.tar", inner.getvalue())
  with tarfile.open(root / "archives" / imagenet.ARCHIVES["validation"], "w") as tar:
    for (split, name), data in images.items():
      if split == "validation":
        _add(tar, name, data)
  val_synsets = _validation_synsets()
  for (split, name), data in images.items():
    synset = name.split("_")[0] if split == "train" else val_synsets[int(name[15:23]) - 1]
    folder = root / "folders" / ("train" if split == "train" else "val") / synset
    os.makedirs(folder, exist_ok=True)
    (folder / name).write_bytes(data)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
  """(root, {(split, file name): (label name, pixels [H, W, 3] uint8)}) of the fake ImageNet."""
  root = tmp_path_factory.mktemp("imagenet")
  rng = np.random.default_rng(0)
  truth, images = {}, {}
  names = [("train", f"{s}_{i}.JPEG", s) for s in SYNSETS for i in range(PER_CLASS)]
  names += [("validation", f"ILSVRC2012_val_{i + 1:08d}.JPEG", s) for i, s in enumerate(_validation_synsets())]
  for split, name, synset in names:
    luma_HWC = np.kron(rng.integers(0, 200, (9, 12, 1)), np.ones((8, 8, 1)))  # [72, 96, 1]
    pixels_HWC = (luma_HWC + rng.integers(0, 56, 3)).astype(np.uint8)  # one tint: JPEG's subsampled chroma is exact
    images[split, name] = _encoded(pixels_HWC, name)
    with Image.open(io.BytesIO(images[split, name])) as im:
      truth[split, name] = (synset, np.asarray(im.convert("RGB")))
  _write_fake(root, images)
  return root, truth


def _prepare(capsys, input_dir, data_dir, *flags) -> tuple[int, str, str]:
  code = cli.main(["prepare-imagenet", "--input", str(input_dir), "--data-dir", str(data_dir), *flags])
  out, err = capsys.readouterr()
  return code, out, err


@pytest.fixture(scope="module")
def prepared(fake, tmp_path_factory):
  out = tmp_path_factory.mktemp("tfds")
  summary = imagenet.prepare(str(fake[0] / "archives"), str(out), workers=2, images_per_shard=4)
  return out, summary


def test_tfds_reads_the_prepared_archives_as_imagenet2012(fake, prepared):
  (_, truth), (out, summary) = fake, prepared
  assert summary["examples"] == {"train": len(SYNSETS) * PER_CLASS, "validation": NUM_VAL}
  assert summary["shards_written"] == len(SYNSETS) + 2 and summary["shards_kept"] == 0
  assert sorted(os.listdir(imagenet.prepared_dir(str(out)))) == sorted(
      ["dataset_info.json", "features.json", "label.labels.txt"]
      + [f"imagenet2012-train.array_record-{i:05d}-of-00003" for i in range(3)]
      + [f"imagenet2012-validation.array_record-{i:05d}-of-00002" for i in range(2)])
  reference = tfds.builder("imagenet2012", data_dir=str(out / "unused")).info.features
  for split in ("train", "validation"):
    ds = tfds.data_source("imagenet2012", split=split, data_dir=str(out), download=False)
    assert ds.dataset_info.features["label"].names == reference["label"].names  # TFDS's 1000 synsets, its order
    assert sorted(ds.dataset_info.features.keys()) == ["file_name", "image", "label"]
    records = [ds[i] for i in range(len(ds))]
    expected = sorted(name for s, name in truth if s == split)
    assert [r["file_name"].decode() for r in records] == expected  # train: class by class, each in name order
    for r in records:
      synset, pixels = truth[split, r["file_name"].decode()]
      assert ds.dataset_info.features["label"].int2str(r["label"]) == synset
      assert r["image"].shape == pixels.shape
      if r["file_name"].decode() in (CMYK, PNG):  # converted to an RGB JPEG of quality 100
        assert np.abs(r["image"].astype(int) - pixels).max() <= 2
      else:  # the original bytes, kept
        np.testing.assert_array_equal(r["image"], pixels)
  source = sources.get_source("tfds:imagenet2012:train", data_dir=str(out))  # what data.train=... opens
  assert len(source) == len(SYNSETS) * PER_CLASS and sources.num_classes(source) == 1000


def test_the_folder_tree_gives_the_same_dataset(fake, prepared, tmp_path):
  out = tmp_path / "tfds"
  imagenet.prepare(str(fake[0] / "folders"), str(out), workers=2, images_per_shard=4)
  archive_dir, folder_dir = imagenet.prepared_dir(str(prepared[0])), imagenet.prepared_dir(str(out))
  shards = sorted(n for n in os.listdir(archive_dir) if ".array_record-" in n)
  assert shards == sorted(n for n in os.listdir(folder_dir) if ".array_record-" in n)
  for name in shards:  # the same examples (protos: the order of a proto's map on the wire is not fixed)
    a, b = (array_record_data_source.ArrayRecordDataSource([os.path.join(d, name)]) for d in (archive_dir, folder_dir))
    assert len(a) == len(b)
    for i in range(len(a)):
      assert tf_example_pb2.Example.FromString(a[i]) == tf_example_pb2.Example.FromString(b[i]), (name, i)


def test_a_bucket_output_holds_the_same_dataset(fake, prepared, tmp_path, monkeypatch):
  with fake_bucket(monkeypatch) as bucket:
    summary = imagenet.prepare(str(fake[0] / "archives"), bucket + "/tfds", workers=2, images_per_shard=4)
    local = tmp_path / "imagenet2012" / os.path.basename(summary["prepared"])
    for url in fileio.walk_files(summary["prepared"]):  # array_record reads local files: copy it down
      fileio.write_bytes(str(local / url.rsplit("/", 1)[-1]), fileio.read_bytes(url))
  assert sorted(os.listdir(local)) == sorted(os.listdir(imagenet.prepared_dir(str(prepared[0]))))
  for split in ("train", "validation"):
    a, b = (tfds.data_source("imagenet2012", split=split, data_dir=str(d)) for d in (tmp_path, prepared[0]))
    assert [r["file_name"] for r in a] == [r["file_name"] for r in b]
    np.testing.assert_array_equal(a[len(a) - 1]["image"], b[len(b) - 1]["image"])


def _mtimes(version_dir) -> dict[str, int]:
  return {n: os.stat(os.path.join(version_dir, n)).st_mtime_ns for n in os.listdir(version_dir)
          if ".array_record-" in n and not n.startswith(".")}


def test_a_rerun_redoes_only_the_unfinished_shards(fake, tmp_path, capsys):
  inputs, out = tmp_path / "folders", tmp_path / "tfds"
  shutil.copytree(fake[0] / "folders", inputs)
  bad = inputs / "train" / SYNSETS[-1] / f"{SYNSETS[-1]}_2.JPEG"
  good = bad.read_bytes()
  bad.write_bytes(good[:200])  # truncated: the last class's shard fails
  code, _, err = _prepare(capsys, inputs, out, "--workers", "1")
  assert code == 2 and str(bad) in err and "not an image PIL can decode" in err, err
  version_dir = imagenet.prepared_dir(str(out))
  finished = _mtimes(version_dir)
  assert {f"imagenet2012-train.array_record-0000{i}-of-00003" for i in (0, 1)} <= set(finished)
  assert "imagenet2012-train.array_record-00002-of-00003" not in finished
  assert not os.path.exists(os.path.join(version_dir, "dataset_info.json"))
  with pytest.raises(FileNotFoundError, match="not prepared"):  # half prepared is not prepared
    sources.get_source("tfds:imagenet2012:train", data_dir=str(out))
  # a killed run's leftovers: a temporary file, and a shard renamed before its record was written
  with open(os.path.join(version_dir, ".imagenet2012-validation.array_record-00000-of-00001.tmp-123"), "wb") as f:
    f.write(b"half a shard")
  unrecorded = "imagenet2012-train.array_record-00001-of-00003"
  os.remove(os.path.join(version_dir, imagenet.RECORDS, unrecorded + ".json"))
  bad.write_bytes(good)
  code, out_text, _ = _prepare(capsys, inputs, out, "--workers", "2")
  assert code == 0
  kept = {n: t for n, t in finished.items() if n != unrecorded}
  now = _mtimes(version_dir)
  assert {n: now[n] for n in kept} == kept and now[unrecorded] != finished[unrecorded]
  assert f"'shards_kept': {len(kept)}" in out_text and f"'shards_written': {len(now) - len(kept)}" in out_text
  assert sorted(os.listdir(version_dir)) == sorted(["dataset_info.json", "features.json", "label.labels.txt", *now])
  assert len(tfds.data_source("imagenet2012", split="train", data_dir=str(out))) == len(SYNSETS) * PER_CLASS


def test_a_prepared_dataset_is_refused_unless_overwrite(fake, tmp_path, capsys):
  args = (fake[0] / "archives", tmp_path, "--splits", "validation", "--workers", "1")
  assert _prepare(capsys, *args)[0] == 0
  code, _, err = _prepare(capsys, *args)
  assert code == 2 and "already holds a prepared imagenet2012" in err and "--overwrite" in err
  code, out, _ = _prepare(capsys, *args, "--overwrite")
  assert code == 0 and "'shards_written': 1" in out


def test_splits_prepared_one_at_a_time_are_both_kept(fake, tmp_path, capsys):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  for split in ("validation", "train"):
    assert _prepare(capsys, fake[0] / "archives", tmp_path, "--splits", split, "--workers", "1")[0] == 0
  for split, count in (("train", len(SYNSETS) * PER_CLASS), ("validation", len(_validation_synsets()))):
    assert len(tfds.data_source("imagenet2012", split=split, data_dir=str(tmp_path))) == count
  code, _, err = _prepare(capsys, fake[0] / "archives", tmp_path, "--splits", "train", "--workers", "1")
  assert code == 2 and "split(s) train" in err
  assert _prepare(capsys, fake[0] / "archives", tmp_path, "--splits", "train", "--workers", "1", "--overwrite")[0] == 0
  assert len(tfds.data_source("imagenet2012", split="validation", data_dir=str(tmp_path))) > 0  # kept


def test_a_corrupt_member_of_a_class_tar_is_named(tmp_path, capsys):
  inner = io.BytesIO()
  with tarfile.open(fileobj=inner, mode="w") as tar:
    _add(tar, "n01440764_7.JPEG", b"\xff\xd8\xff\xe0 not a jpeg")
  with tarfile.open(tmp_path / imagenet.ARCHIVES["train"], "w") as outer:
    _add(outer, "n01440764.tar", inner.getvalue())
  code, _, err = _prepare(capsys, tmp_path, tmp_path / "tfds", "--splits", "train", "--workers", "1")
  assert code == 2 and "ILSVRC2012_img_train.tar: member n01440764.tar/n01440764_7.JPEG" in err, err


@pytest.mark.parametrize("make, named", [
    (lambda root: None, "ILSVRC2012_img_train.tar or train"),
    (lambda root: (root / "train" / "dogs").mkdir(parents=True), "'dogs' is not one of the 1000 ImageNet synsets"),
    (lambda root: (root / imagenet.ARCHIVES["train"]).write_bytes(b"no tar"), "is not an uncompressed tar"),
])
def test_bad_input_is_named(tmp_path, capsys, make, named):
  make(tmp_path)
  code, _, err = _prepare(capsys, tmp_path, tmp_path / "tfds", "--splits", "train")
  last = err.strip().splitlines()[-1]  # the error: one line
  assert code == 2 and last.startswith("ar-gen prepare-imagenet: error: ") and named in last, err


@pytest.mark.slow
def test_one_training_step_on_the_prepared_dataset(prepared, tmp_path, capsys):
  """The acceptance check: an ImageNet config trains on the output as it is (~45 s on 2 cores, mostly compiling)."""
  code = cli.main(["train", "--config", os.path.join(CONFIGS, "imagenet256_vq16.py:runlocal"), "--workdir",
                   str(tmp_path / "w"), f"--config.data.data_dir={prepared[0]}", "--config.total_steps=1"])
  assert code == 0 and "'loss'" in capsys.readouterr().out
