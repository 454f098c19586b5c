"""`ar-gen fid` end to end (classifier and random-weight Inception features), its statistics and its bad input."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from ar_gen import cli
from ar_gen import config as config_lib
from ar_gen.data import pipeline
from ar_gen.data.preprocess import to_uint8
from ar_gen.eval import features as features_lib
from ar_gen.eval import fid, image_sets, metrics
from ar_gen.train import trainer
from tests.conftest import CONFIGS
from tests.inception_random import random_state_dict


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("classifier"))
  trainer.train(config_lib.load_config(os.path.join(CONFIGS, "mnist_classifier.py"), ["total_steps=30"]), workdir)
  return workdir


def _heldout(classifier_dir):
  config = config_lib.load_workdir_config(classifier_dir)
  batches = list(pipeline.eval_batches(config.data, 500))
  images = np.concatenate([to_uint8(b["image"]) for b in batches])
  return images, np.concatenate([b["label"] for b in batches])


def test_fid_with_classifier_features(classifier_dir, tmp_path, capsys):
  images, labels = _heldout(classifier_dir)
  np.savez(tmp_path / "same.npz", arr_0=images, arr_1=labels)
  folder = tmp_path / "shifted"
  folder.mkdir()
  for i, image in enumerate(images[:200]):
    Image.fromarray(np.roll(image[..., 0], 6, axis=1)).save(folder / f"{i:04d}.png")
  (folder / "broken.png").write_bytes(b"\x89PNG not really")
  (folder / "notes.txt").write_text("ignored: not an image extension")
  out = tmp_path / "results.json"
  args = ["fid", "--samples", str(tmp_path / "same.npz"), str(folder), "--ref", "bundled:mnist:test",
          "--features", f"classifier:{classifier_dir}", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
  assert cli.main(args) == 0
  printed = capsys.readouterr().out
  assert "same.npz" in printed and "shifted" in printed
  same, shifted = json.load(open(out))["results"]
  assert same["count"] == 500 and abs(same["fid"]) < 1e-3 and same["precision"] == same["recall"] == 1.0
  assert same["accuracy"] > 0.5 and same["is_mean"] > 1
  assert shifted["count"] == 200 and shifted["skipped_files"] == 1 and shifted["fid"] > 1.0
  assert "accuracy" not in shifted  # a folder has no labels
  assert len(os.listdir(tmp_path / "cache")) == 1
  assert cli.main(args + ["--overwrite"]) == 0  # from the cache: the same numbers
  assert json.load(open(out))["results"][1]["fid"] == pytest.approx(shifted["fid"], rel=1e-9)


@pytest.mark.slow  # ~70 s on 2 cores; `make test-all`
def test_fid_with_inception_features_grayscale_and_mixed_sizes(tmp_path):
  weights = tmp_path / "inception.npz"
  np.savez(weights, **random_state_dict(0))
  rng = np.random.default_rng(0)
  np.savez(tmp_path / "rgb.npz", arr_0=rng.integers(0, 256, (12, 48, 48, 3), dtype=np.uint8))
  ref = tmp_path / "ref"
  ref.mkdir()
  for i in range(12):
    size = (40, 40) if i % 2 else (56, 32)
    Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), mode="L").save(ref / f"{i}.png")
  result = fid.evaluate([str(tmp_path / "rgb.npz")], str(ref), inception=str(weights), batch_size=4, splits=2,
                        cache_dir=str(tmp_path / "cache"))
  row = result["results"][0]
  assert result["ref_count"] == 12 and row["count"] == 12 and np.isfinite(row["fid"]) and row["fid"] > 0
  assert row["is_mean"] >= 1 and 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1


def test_precomputed_statistics_give_fid_only(classifier_dir, tmp_path):
  images, _ = _heldout(classifier_dir)
  features = features_lib.classifier_extractor(classifier_dir).classifier.features(images)
  np.savez(tmp_path / "stats.npz", mu=features.mean(0), sigma=np.cov(features, rowvar=False))
  result = fid.evaluate([str(tmp_path / "stats.npz")], "bundled:mnist:test", f"classifier:{classifier_dir}",
                        cache_dir=str(tmp_path / "cache"))
  row = result["results"][0]
  assert abs(row["fid"]) < 1e-3 and "is_mean" not in row and "precision" not in row


def test_inception_score_and_precision_recall_on_known_cases():
  assert metrics.inception_score(np.zeros((100, 10)), splits=10)[0] == pytest.approx(1.0)
  class_ordered = np.eye(5)[np.repeat(np.arange(5), 400)] * 50.0  # confident, balanced, one class after another
  assert metrics.inception_score(class_ordered, splits=10)[0] == pytest.approx(5.0, rel=0.02)
  rng = np.random.default_rng(0)
  real = rng.standard_normal((200, 8))
  assert metrics.precision_recall(real, real, k=3) == (1.0, 1.0)
  assert metrics.precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "no image files"),
    (lambda p: None, "not a folder, an .npz file"),
    (lambda p: np.savez(p.with_suffix(".npz"), arr_0=np.zeros((4, 8, 8, 3), np.float32)), "must be uint8 images"),
    (lambda p: np.savez(p.with_suffix(".npz"), images=np.zeros(3)), r"expected images in arr_0"),
])
def test_bad_sample_sets_are_refused_by_name(tmp_path, make, message):
  path = tmp_path / "set"
  make(path)
  spec = str(path.with_suffix(".npz")) if path.with_suffix(".npz").exists() else str(path)
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    image_sets.load_image_set(spec, None)


def test_missing_inception_weights_exit_with_the_convert_command(tmp_path, monkeypatch, capsys):
  monkeypatch.delenv("AR_GEN_INCEPTION", raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  np.savez(tmp_path / "a.npz", arr_0=np.zeros((4, 8, 8, 3), np.uint8))
  assert cli.main(["fid", "--samples", str(tmp_path / "a.npz"), "--ref", str(tmp_path / "a.npz")]) == 2
  assert "ar-gen convert-inception" in capsys.readouterr().err
