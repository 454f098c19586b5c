"""ADM-comparable `ar-gen fid`: a reference batch with images and mu/sigma, precision / recall as ADM's evaluator
defines them, an Inception score independent of file order, a statistics-only reference, and bucket paths.

A tiny jitted extractor (as in test_fid_sharded.py) stands in for Inception, so these tests run in seconds; the
metrics only see features and logits. The last test runs the Inception extractor itself (random weights, as in
test_inception.py): its IS logits leave out the classifier's bias, as ADM's evaluator and improved-gan take them.
"""

import json
import logging

import jax.numpy as jnp
import numpy as np
import pytest

from ar_gen import cli, fileio
from ar_gen.eval import features as features_lib
from ar_gen.eval import fid, fid_stats, metrics
from tests.fake_bucket import fake_bucket
from tests.inception_random import random_features, random_state_dict

NUM_CLASSES, PER_CLASS, SIZE = 10, 12, 8


def _tiny_fn(params, images_BHWC):
  x_BD = images_BHWC.astype(jnp.float32).reshape(images_BHWC.shape[0], -1) / 127.5 - 1
  features_BF = jnp.tanh(x_BD @ params["w"])
  return features_BF, features_BF @ params["v"]


@pytest.fixture
def extractor(monkeypatch):
  """A 16-feature, 10-logit extractor; `ar-gen fid` builds it whatever --features says."""
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.standard_normal((SIZE * SIZE * 3, 16)) * 0.1, jnp.float32),
            "v": jnp.asarray(rng.standard_normal((16, NUM_CLASSES)) * 4, jnp.float32)}
  tiny = features_lib.Extractor("tiny", _tiny_fn, params, None, channels=3)
  monkeypatch.setattr(fid, "make_extractor", lambda *args: tiny)
  return tiny


def _class_images(seed):
  """uint8 [N, 8, 8, 3] of NUM_CLASSES colours plus noise, one class after another, and their labels [N]."""
  rng = np.random.default_rng(seed)
  colours = np.random.default_rng(99).integers(0, 256, (NUM_CLASSES, SIZE, SIZE, 3))
  labels = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
  images = np.clip(colours[labels] + rng.normal(0, 25, (len(labels), SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
  return images, labels


def _features(extractor, images_NHWC):
  return features_lib.extract(extractor, list(images_NHWC), 32, "test")


def _brute_precision_recall(real_NF, fake_MF, k):
  """ADM's definition (evaluations/evaluator.py, ManifoldEstimator): squared distances to the k-th nearest
  neighbour (the point itself is neighbour 0), a point counts if it lies within any ball of the other set."""
  def radii(x):
    return np.sort(((x[:, None] - x[None]) ** 2).sum(-1), axis=1)[:, k]

  def covered(points, centres):
    return float(np.mean((((points[:, None] - centres[None]) ** 2).sum(-1) <= radii(centres)[None]).any(axis=1)))

  return covered(fake_MF, real_NF), covered(real_NF, fake_MF)


def _naive_inception_score(logits_NK, splits):
  """improved-gan's / ADM's: the splits taken in file order."""
  p = np.exp(logits_NK - np.logaddexp.reduce(logits_NK, axis=1, keepdims=True))
  scores = [np.exp(np.mean(np.sum(part * (np.log(part) - np.log(part.mean(0))), 1)))
            for part in np.array_split(p, splits)]
  return float(np.mean(scores))


@pytest.mark.parametrize("k, block", [(3, 1024), (3, 7), (1, 50), (5, 13)])
def test_precision_recall_equal_a_brute_force_computation(k, block):
  features = random_features(0, 270, 12)  # one distribution: real and fake overlap in part
  real, fake = features[:150], features[150:] * 1.2
  expected = _brute_precision_recall(real, fake, k)
  assert 0 < expected[0] < 1 and 0 < expected[1] < 1
  assert metrics.precision_recall(real, fake, k, block) == expected


def test_inception_score_does_not_depend_on_file_order(extractor):
  images, _ = _class_images(0)
  _, logits = _features(extractor, images)
  shuffled = logits[np.random.default_rng(5).permutation(len(logits))]
  assert metrics.inception_score(logits, 10) == metrics.inception_score(shuffled, 10)
  in_our_order = logits[metrics.content_order(logits)[np.random.default_rng(0).permutation(len(logits))]]
  assert metrics.inception_score(logits, 10)[0] == pytest.approx(_naive_inception_score(in_our_order, 10), rel=1e-12)
  assert _naive_inception_score(logits, 10) < 0.8 * metrics.inception_score(logits, 10)[0]  # class-sorted: deflated


def _write_adm_reference(path, images, labels, mu, sigma):
  """ADM's reference-batch layout: images, labels, FID statistics and (unused here) spatial statistics."""
  np.savez(path, arr_0=images, arr_1=labels, mu=mu, sigma=sigma, mu_s=np.zeros(4), sigma_s=np.eye(4))


def test_adm_reference_gives_fid_from_its_statistics_and_precision_recall_is_from_its_images(extractor, tmp_path,
                                                                                             caplog):
  ref_images, ref_labels = _class_images(1)
  ref_feats, ref_logits = _features(extractor, ref_images)
  computed = fid_stats.statistics(ref_feats)
  file_stats = fid_stats.Stats(computed.mu + 0.05, computed.sigma * 1.1, -1)  # as if from a larger dataset
  _write_adm_reference(tmp_path / "ref.npz", ref_images, ref_labels, file_stats.mu, file_stats.sigma)
  sample_images, sample_labels = _class_images(2)
  np.savez(tmp_path / "sorted.npz", arr_0=sample_images, arr_1=sample_labels)
  order = np.random.default_rng(3).permutation(len(sample_images))
  np.savez(tmp_path / "shuffled.npz", arr_0=sample_images[order], arr_1=sample_labels[order])
  out, cache = tmp_path / "fid.json", tmp_path / "cache"
  args = ["fid", "--samples", str(tmp_path / "sorted.npz"), str(tmp_path / "shuffled.npz"), "--ref",
          str(tmp_path / "ref.npz"), "--cache-dir", str(cache), "--out", str(out)]
  with caplog.at_level(logging.INFO, "ar_gen.fid"):
    assert cli.main(args) == 0
  result = json.loads(out.read_text())
  sample_feats, sample_logits = _features(extractor, sample_images)
  assert result["ref_stats"] == "file mu/sigma" and result["ref_count"] == len(ref_images)
  assert "precision_recall_unavailable" not in result
  check = result["ref_stats_check"]
  assert check["computed_count"] == len(ref_images)
  assert check["fid_file_vs_computed"] == pytest.approx(fid_stats.frechet_distance(file_stats, computed), rel=1e-9)
  assert check["fid_file_vs_computed"] > 0.01
  assert result["ref_is_mean"] == pytest.approx(metrics.inception_score(ref_logits, 10)[0], rel=1e-9)
  in_order, shuffled = result["results"]
  expected_fid = fid_stats.frechet_distance(fid_stats.statistics(sample_feats), file_stats)
  assert in_order["fid"] == pytest.approx(expected_fid, rel=1e-6)
  assert in_order["fid"] != pytest.approx(fid_stats.frechet_distance(fid_stats.statistics(sample_feats), computed),
                                          rel=1e-3)
  assert (in_order["precision"], in_order["recall"]) == _brute_precision_recall(ref_feats, sample_feats, 3)
  assert 0 < in_order["precision"] <= 1 and 0 < in_order["recall"] <= 1
  assert in_order["is_mean"] == shuffled["is_mean"] and in_order["is_std"] == shuffled["is_std"]
  assert in_order["is_mean"] > 1 / 0.8 * _naive_inception_score(sample_logits, 10)
  assert "FID(file mu/sigma, recomputed)" in caplog.text
  assert len(fileio.listdir(cache)) == 1
  caplog.clear()
  with caplog.at_level(logging.INFO, "ar_gen.fid"):
    assert cli.main(args + ["--overwrite"]) == 0
  assert "reference features from the cache" in caplog.text
  assert json.loads(out.read_text()) == result


def test_reference_statistics_that_match_its_images_check_as_equal(extractor, tmp_path):
  images, labels = _class_images(1)
  stats = fid_stats.statistics(_features(extractor, images)[0])
  _write_adm_reference(tmp_path / "ref.npz", images, labels, stats.mu, stats.sigma)
  result = fid.evaluate([str(tmp_path / "ref.npz")], str(tmp_path / "ref.npz"), cache_dir=str(tmp_path / "cache"))
  assert abs(result["ref_stats_check"]["fid_file_vs_computed"]) < 1e-6
  assert result["ref_stats_check"]["mu_max_abs_diff"] < 1e-9


def test_a_reference_of_images_only_computes_its_statistics(extractor, tmp_path):
  images, labels = _class_images(1)
  np.savez(tmp_path / "ref.npz", arr_0=images, arr_1=labels)
  result = fid.evaluate([str(tmp_path / "ref.npz")], str(tmp_path / "ref.npz"), cache_dir=str(tmp_path / "cache"))
  assert result["ref_stats"] == "computed" and "ref_stats_check" not in result
  row = result["results"][0]
  assert abs(row["fid"]) < 1e-6 and row["precision"] == row["recall"] == 1.0


def test_a_statistics_only_reference_gives_fid_and_says_precision_recall_are_unavailable(extractor, tmp_path,
                                                                                         caplog):
  images, labels = _class_images(1)
  stats = fid_stats.statistics(_features(extractor, images)[0])
  np.savez(tmp_path / "stats.npz", mu=stats.mu, sigma=stats.sigma)
  np.savez(tmp_path / "samples.npz", arr_0=images, arr_1=labels)
  out = tmp_path / "fid.json"
  with caplog.at_level(logging.INFO, "ar_gen.fid"):
    assert cli.main(["fid", "--samples", str(tmp_path / "samples.npz"), "--ref", str(tmp_path / "stats.npz"),
                     "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  assert "precision and recall need reference images" in result["precision_recall_unavailable"]
  assert "precision and recall need reference images" in caplog.text
  assert result["ref_stats"] == "file mu/sigma" and result["ref_count"] is None and "ref_is_mean" not in result
  row = result["results"][0]
  assert abs(row["fid"]) < 1e-6 and row["precision"] is None and row["recall"] is None and row["is_mean"] > 1


def test_reference_cache_and_results_in_a_bucket(extractor, tmp_path, monkeypatch):
  images, labels = _class_images(1)
  np.savez(tmp_path / "samples.npz", arr_0=images, arr_1=labels)
  with fake_bucket(monkeypatch) as bucket:
    fileio.save_npz(f"{bucket}/ref.npz", arr_0=images, arr_1=labels)
    result = fid.evaluate([str(tmp_path / "samples.npz")], f"{bucket}/ref.npz", cache_dir=f"{bucket}/cache",
                          out=f"{bucket}/out/fid.json")
    assert fileio.read_json(f"{bucket}/out/fid.json") == json.loads(json.dumps(result))
    assert len(fileio.listdir(f"{bucket}/cache")) == 1
  row = result["results"][0]
  assert abs(row["fid"]) < 1e-6 and row["precision"] == row["recall"] == 1.0


def test_inception_score_logits_leave_out_the_classifier_bias(tmp_path):
  weights = random_state_dict(0)
  np.savez(tmp_path / "inception.npz", **weights)
  inception = features_lib.inception_extractor(str(tmp_path / "inception.npz"), 256)
  images = list(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
  pool3_NF, logits_NK = features_lib.extract(inception, images, 2, "test")
  np.testing.assert_allclose(logits_NK, pool3_NF @ weights["fc.weight"].T, rtol=1e-4, atol=1e-5)
  assert np.abs(logits_NK - (pool3_NF @ weights["fc.weight"].T + weights["fc.bias"])).max() > 1e-3
