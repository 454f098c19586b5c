"""`fid.evaluate`'s inputs: dataset specs as training takes them, the classifier's own preprocessing of every image
set, sample labels outside its classes, `out` checked before any work, and bad files refused by name."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from ar_gen import config as config_lib
from ar_gen.data import pipeline, sources
from ar_gen.data.preprocess import to_uint8
from ar_gen.errors import UserError
from ar_gen.eval import features as features_lib
from ar_gen.eval import fid, image_sets
from ar_gen.train import trainer
from tests.conftest import CONFIGS

NO_CLASSIFIER = "classifier:/nonexistent/classifier"  # loading it would fail: proves a check ran before


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
  """A classifier of 28-px MNIST digits padded to 32 (configs/mnist_classifier.py), trained for a few steps."""
  workdir = str(tmp_path_factory.mktemp("classifier"))
  overrides = ["total_steps=3", "log_every_steps=1", "batch_size=16", "data.num_threads=1"]
  trainer.train(config_lib.load_config(os.path.join(CONFIGS, "mnist_classifier.py"), overrides), workdir)
  return workdir


def _digit_indices(labels_N):
  """The first 10 digits of each class, class after class."""
  return np.concatenate([np.flatnonzero(labels_N == c)[:10] for c in range(10)])


@pytest.fixture(scope="module")
def digits():
  """100 bundled test digits, 10 per class: uint8 [100, 28, 28, 1] and labels [100]."""
  source = sources.bundled_mnist("test")
  keep = _digit_indices(source.labels_N)
  return source.images_NHWC[keep], source.labels_N[keep]


def _class_folders(root, images_NHWC, labels_N, num_classes=10):
  for c in range(num_classes):
    (root / str(c)).mkdir(parents=True)
  for i, (image, label) in enumerate(zip(images_NHWC, labels_N)):
    Image.fromarray(image[..., 0]).save(root / str(label) / f"{i:04d}.png")
  return root


def _pad_to_32(images_NHWC):
  return np.pad(images_NHWC, ((0, 0), (2, 2), (2, 2), (0, 0)))


def test_folder_spec_scores_like_the_plain_folder_and_the_npz(classifier_dir, digits, tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path / "tfds"))  # where folder: specs are converted
  images, labels = digits
  folder = _class_folders(tmp_path / "digits", images, labels)
  np.savez(tmp_path / "digits.npz", arr_0=images, arr_1=labels)
  samples = [f"folder:{folder}", str(folder), str(tmp_path / "digits.npz")]
  result = fid.evaluate(samples, "bundled:mnist:test", f"classifier:{classifier_dir}", batch_size=100,
                        cache_dir=str(tmp_path / "cache"))
  spec, plain, npz = result["results"]
  assert spec["count"] == plain["count"] == npz["count"] == 100
  assert spec["fid"] > 0 and plain["fid"] == pytest.approx(spec["fid"], rel=1e-6)
  assert npz["fid"] == pytest.approx(spec["fid"], rel=1e-6)
  assert spec["accuracy"] == npz["accuracy"] and "accuracy" not in plain  # folder: labels by class folder


def test_classifier_features_prepare_every_set_as_its_training_did(classifier_dir, digits, tmp_path):
  images, labels = digits
  extractor = features_lib.classifier_extractor(classifier_dir)
  config = config_lib.load_workdir_config(classifier_dir)
  batches = list(pipeline.eval_batches(config.data, 500))  # bundled:mnist:test as the training pipeline reads it
  training = np.concatenate([to_uint8(b["image"]) for b in batches])
  keep = _digit_indices(np.concatenate([b["label"] for b in batches]))
  np.testing.assert_array_equal(training[keep], _pad_to_32(images))
  by_hand, _ = features_lib.extract(extractor, list(_pad_to_32(images)), 50, "32 px")
  raw, _ = features_lib.extract(extractor, list(images), 50, "28 px")
  rgb, _ = features_lib.extract(extractor, list(np.repeat(images, 3, axis=-1)), 50, "28 px RGB")
  np.testing.assert_array_equal(raw, by_hand)
  np.testing.assert_array_equal(rgb, by_hand)
  np.testing.assert_allclose(by_hand, extractor.classifier.features(_pad_to_32(images)), rtol=1e-5, atol=1e-5)
  np.savez(tmp_path / "raw.npz", arr_0=images, arr_1=labels)
  np.savez(tmp_path / "padded.npz", arr_0=_pad_to_32(images))
  result = fid.evaluate([str(tmp_path / "raw.npz")], str(tmp_path / "padded.npz"), f"classifier:{classifier_dir}",
                        cache_dir=str(tmp_path / "cache"))
  row = result["results"][0]
  assert abs(row["fid"]) < 1e-6 and row["precision"] == row["recall"] == 1.0


def test_labels_outside_the_classifier_are_refused_before_any_features(classifier_dir, digits, tmp_path,
                                                                        monkeypatch):
  images, labels = digits
  np.savez(tmp_path / "good.npz", arr_0=images, arr_1=labels)
  bad_labels = labels.copy()
  bad_labels[[0, 5, 50]] = [-1, 10, 12]
  np.savez(tmp_path / "bad.npz", arr_0=images, arr_1=bad_labels)
  eleven = _class_folders(tmp_path / "eleven", images[:11], np.arange(11), num_classes=11)

  def no_features(*args):
    raise AssertionError(f"features were computed: {args[2:]}")

  monkeypatch.setattr(fid, "extract", no_features)
  cache = tmp_path / "cache"
  with pytest.raises(ValueError, match=r"bad\.npz: 3 label\(s\) outside the classifier's 10 classes .*\[-1, 10, 12\]"):
    fid.evaluate([str(tmp_path / "good.npz"), str(tmp_path / "bad.npz")], "bundled:mnist:test",
                 f"classifier:{classifier_dir}", cache_dir=str(cache))
  with pytest.raises(ValueError, match=r"folder:.*eleven: 1 label\(s\) outside the classifier's 10 classes.*\[10\]"):
    fid.evaluate([f"folder:{eleven}"], "bundled:mnist:test", f"classifier:{classifier_dir}", cache_dir=str(cache))
  assert not cache.exists()


def _evaluate_to(out):
  """An evaluation that would fail on its missing samples and classifier, were `out` not checked first."""
  return fid.evaluate([str(out.parent / "missing.npz")], "bundled:mnist:test", NO_CLASSIFIER, out=str(out))


@pytest.mark.parametrize("make, out_name, message", [
    (lambda d: (d / "results").mkdir(), "results", r"results is a directory"),
    (lambda d: (d / "results.json").write_text('{"old": 1}'), "results.json", r"results\.json already exists; pass "
     "--overwrite"),
    (lambda d: (d / "file").write_text("x"), "file/results.json", r"file is a file, not a directory"),
])
def test_out_is_refused_before_any_work(tmp_path, make, out_name, message):
  make(tmp_path)
  out = tmp_path / out_name
  before = out.read_bytes() if out.is_file() else None
  with pytest.raises(UserError, match=message):
    _evaluate_to(out)
  assert (out.read_bytes() if out.is_file() else None) == before


def test_overwrite_replaces_an_existing_out(classifier_dir, digits, tmp_path):
  images, labels = digits
  np.savez(tmp_path / "digits.npz", arr_0=images, arr_1=labels)
  out = tmp_path / "results" / "fid.json"
  out.parent.mkdir()
  out.write_text('{"old": 1}')
  result = fid.evaluate([str(tmp_path / "digits.npz")], str(tmp_path / "digits.npz"), f"classifier:{classifier_dir}",
                        cache_dir=str(tmp_path / "cache"), out=str(out), overwrite=True)
  assert json.loads(out.read_text()) == json.loads(json.dumps(result)) and "old" not in result
  assert os.listdir(out.parent) == ["fid.json"]  # no temporary file left


def test_a_new_out_and_its_folder_are_written(classifier_dir, digits, tmp_path):
  images, _ = digits
  np.savez(tmp_path / "digits.npz", arr_0=images)
  out = tmp_path / "new" / "folder" / "fid.json"
  fid.evaluate([str(tmp_path / "digits.npz")], str(tmp_path / "digits.npz"), f"classifier:{classifier_dir}",
               cache_dir=str(tmp_path / "cache"), out=str(out))
  assert json.loads(out.read_text())["results"][0]["count"] == 100


def test_tokens_are_refused_as_samples_and_as_reference(tmp_path):
  np.savez(tmp_path / "a.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8))
  for samples, ref in (([str(tmp_path / "a.npz"), "tokens:/data/tokens"], str(tmp_path / "a.npz")),
                       ([str(tmp_path / "a.npz")], "tokens:/data/tokens")):
    with pytest.raises(ValueError, match=r"tokens:/data/tokens: .* not images; .*ar-gen sample"):
      fid.evaluate(samples, ref, NO_CLASSIFIER)


def test_a_missing_sample_set_is_named_before_any_work(tmp_path):
  np.savez(tmp_path / "a.npz", arr_0=np.zeros((4, 8, 8, 1), np.uint8))
  samples = [str(tmp_path / "a.npz"), str(tmp_path / "typo.npz")]
  with pytest.raises(FileNotFoundError, match=r"typo\.npz: no such file"):
    fid.evaluate(samples, str(tmp_path / "a.npz"), NO_CLASSIFIER)
  with pytest.raises(FileNotFoundError, match=r"dataset folder .*nowhere.* does not exist"):
    fid.evaluate([str(tmp_path / "a.npz")], f"folder:{tmp_path / 'nowhere'}", NO_CLASSIFIER)


def _truncated(path):
  np.savez(path, arr_0=np.zeros((300, 28, 28, 1), np.uint8))
  path.write_bytes(path.read_bytes()[:-100])


def _one_image_folder(path):
  path.with_suffix("").mkdir()
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(path.with_suffix("") / "0.png")


@pytest.mark.parametrize("make, message", [
    (_truncated, r"set\.npz: not a readable \.npz"),
    (lambda p: p.write_bytes(b""), r"set\.npz: not a readable \.npz"),
    (lambda p: np.save(open(p, "wb"), np.zeros(3)), r"set\.npz: holds a single array"),
    (lambda p: np.savez(p, arr_0=np.array([None, 1], object)), r"set\.npz: arr_0 cannot be read"),
    (lambda p: np.savez(p, arr_0=np.zeros((4, 8, 8), np.uint8), arr_1=np.zeros(4)), r"set\.npz: .*integer class"),
    (lambda p: np.savez(p, arr_0=np.zeros((4, 8, 8), np.uint8), arr_1=np.zeros(3, int)), r"one label per image"),
    (lambda p: np.savez(p, arr_0=np.zeros((1, 8, 8), np.uint8)), r"set\.npz: arr_0 holds 1 images"),
    (lambda p: np.savez(p, mu=np.zeros(4), sigma=np.zeros(4)), r"set\.npz: mu \(4,\) and sigma \(4,\)"),
    (_one_image_folder, r"set: 1 of its 1 image files could be read; statistics need at least 2"),
])
def test_bad_files_are_refused_by_name(tmp_path, make, message):
  path = tmp_path / "set.npz"
  make(path)
  spec = str(path) if path.exists() else str(path.with_suffix(""))
  with pytest.raises(ValueError, match=message):
    image_sets.load_image_set(spec, None)
