"""Dataset sources, preprocessing ops and grain pipelines."""

import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from ar_gen.data import pipeline, preprocess, sources


def _data(**kw):
  d = dict(train="bundled:mnist:train", eval="bundled:mnist:test", data_dir="", image_size=32, channels=1,
           resize="pad", random_flip=False, num_threads=2, prefetch=4)
  d.update(kw)
  return ml_collections.ConfigDict(d)


def test_bundled_mnist_split_is_fixed_and_disjoint():
  train, test = sources.get_source("bundled:mnist"), sources.get_source("bundled:mnist:test")
  assert (len(train), len(test)) == (4500, 500)
  assert np.bincount(test.labels_N).tolist() == [50] * 10
  train_set = {im.tobytes() for im in train.images_NHWC}
  assert not any(im.tobytes() in train_set for im in test.images_NHWC)
  assert train.images_NHWC.dtype == np.uint8 and train.images_NHWC.max() == 255


def test_unknown_spec_and_split_are_named():
  with pytest.raises(ValueError, match="tfds:, folder:, bundled: or tokens:"):
    sources.get_source("mnist")
  with pytest.raises(ValueError, match="'val'"):
    sources.get_source("bundled:mnist:val")


def test_resize_crop_takes_the_center_of_the_shorter_side():
  image = np.zeros((40, 80, 3), np.uint8)
  image[:, 10:70] = 200
  out = preprocess.resize_crop(image, 20)
  assert out.shape == (20, 20, 3)
  assert out.min() >= 190


def test_resize_pad_centers_and_keeps_pixels():
  image = np.full((28, 28, 1), 255, np.uint8)
  out = preprocess.resize_pad(image, 32)
  assert out.shape == (32, 32, 1)
  assert out[2:30, 2:30].min() == 255 and out[:2].max() == 0 and out[:, :2].max() == 0


def test_channels_and_range():
  rgb = np.stack([np.full((4, 4), v, np.uint8) for v in (255, 0, 0)], -1)
  assert preprocess.to_channels(rgb, 1)[0, 0, 0] == round(0.299 * 255)
  assert preprocess.to_channels(rgb[:, :, :1], 3).shape == (4, 4, 3)
  x = preprocess.to_float(np.array([[[0], [255]]], np.uint8))
  assert x.min() == -1.0 and x.max() == 1.0
  np.testing.assert_array_equal(preprocess.to_uint8(x), [[[0], [255]]])


def test_flip_mirrors_the_image():
  record = {"image": np.arange(16, dtype=np.uint8).reshape(4, 4, 1), "label": 3}
  rng = np.random.default_rng(0)
  outs = [preprocess.preprocess(record, image_size=4, channels=1, flip=True, rng=rng)["image"] for _ in range(8)]
  plain = preprocess.to_float(record["image"])
  assert any(np.array_equal(o, plain) for o in outs) and any(np.array_equal(o, plain[:, ::-1]) for o in outs)


def test_decode_from_bytes(tmp_path):
  path = tmp_path / "x.png"
  Image.fromarray(np.full((5, 7, 3), 9, np.uint8)).save(path)
  image = preprocess.decode(path.read_bytes())
  assert image.shape == (5, 7, 3) and image.max() == 9


def test_pipeline_is_deterministic_and_resumes_from_its_state():
  data = _data(random_flip=True)
  it = iter(pipeline.train_dataset(data, 8, seed=3))
  first = [next(it) for _ in range(3)]
  state = it.get_state()
  after = [next(it) for _ in range(2)]
  again = iter(pipeline.train_dataset(data, 8, seed=3))
  np.testing.assert_array_equal(next(again)["image"], first[0]["image"])
  resumed = iter(pipeline.train_dataset(data, 8, seed=3))
  resumed.set_state(state)
  for a in after:
    b = next(resumed)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  other = next(iter(pipeline.train_dataset(data, 8, seed=4)))
  assert not np.array_equal(other["label"], first[0]["label"]) or not np.array_equal(other["image"],
                                                                                      first[0]["image"])


def test_eval_batches_cover_the_split_once_in_order():
  batches = list(pipeline.eval_batches(_data(), 64))
  labels = np.concatenate([b["label"] for b in batches])
  assert len(labels) == 500 and [len(b["label"]) for b in batches][-1] == 500 - 7 * 64
  np.testing.assert_array_equal(labels, sources.get_source("bundled:mnist:test").labels_N)


def _make_folder(root, files_per_class=2):
  for c, name in enumerate(("cat", "dog")):
    os.makedirs(root / name)
    for i in range(files_per_class):
      Image.fromarray(np.full((10 + i, 12, 3), 40 * c + i, np.uint8)).save(root / name / f"{i}.png")


def test_folder_source_converts_once_with_labels_by_folder(tmp_path):
  _make_folder(tmp_path / "imgs")
  src = sources.get_source(f"folder:{tmp_path / 'imgs'}", data_dir=str(tmp_path / "tfds"))
  assert len(src) == 4
  by_label = sorted((int(src[i]["label"]), int(src[i]["image"][0, 0, 0])) for i in range(4))
  assert by_label == [(0, 0), (0, 1), (1, 40), (1, 41)]
  batch = next(pipeline.eval_batches(_data(eval=f"folder:{tmp_path / 'imgs'}", data_dir=str(tmp_path / "tfds"),
                                           channels=3, image_size=8, resize="crop"), 4))
  assert batch["image"].shape == (4, 8, 8, 3)


def test_missing_folder_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="does-not-exist"):
    sources.get_source(f"folder:{tmp_path / 'does-not-exist'}", data_dir=str(tmp_path / "tfds"))


def test_non_image_file_in_folder_is_named(tmp_path):
  _make_folder(tmp_path / "imgs")
  (tmp_path / "imgs" / "dog" / "notes.txt").write_text("not an image")
  with pytest.raises(ValueError, match="notes.txt.*not a readable image"):
    sources.get_source(f"folder:{tmp_path / 'imgs'}", data_dir=str(tmp_path / "tfds"))


@pytest.mark.parametrize("name,split", [("imagenet2012", "validation"), ("cifar10", "train")])
def test_tfds_sources_read_mock_data(name, split):
  with tfds.testing.mock_data(num_examples=6):
    data = _data(train=f"tfds:{name}:{split}", eval=f"tfds:{name}:{split}", channels=3, image_size=16,
                 resize="crop", random_flip=True)
    batch = next(iter(pipeline.train_dataset(data, 4, seed=0)))
  assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.float32
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
