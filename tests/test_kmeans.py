"""k-means (tokenizers/kmeans.py): a brute-force Lloyd from the same start, identical on 1 and 8 devices, empty
clusters re-seeded with the farthest points, deterministic for a seed, chunked assignment, named bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tokenizers import kmeans


def _blobs(n=300, d=4, k=5, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(k, d)) * 4
  return (centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _on_metric(x, metric):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True) if metric == "cosine" else x


def _brute_force(x, init, iters, metric):
  """Lloyd in float64 numpy: every distance computed directly; (centroids, assignments, inertia) per iteration."""
  x, c = _on_metric(x, metric), _on_metric(init, metric)
  history = []
  for _ in range(iters):
    if metric == "cosine":
      dist = 1 - x @ c.T
    else:
      dist = ((x[:, None] - c[None]) ** 2).sum(-1)
    ids = dist.argmin(1)
    inertia = dist[np.arange(len(x)), ids].sum()
    assert len(np.unique(ids)) == len(c), "the reference has no re-seeding: pick data without empty clusters"
    sums = np.stack([x[ids == j].sum(0) for j in range(len(c))])
    c = sums / np.linalg.norm(sums, axis=-1, keepdims=True) if metric == "cosine" else \
        sums / np.bincount(ids, minlength=len(c))[:, None]
    history.append((c, ids, inertia))
  return history


@pytest.mark.parametrize("metric", kmeans.METRICS)
def test_lloyd_equals_a_brute_force_reference_from_the_same_start(metric):
  x = _blobs()
  init = x[np.random.default_rng(1).choice(len(x), 5, replace=False)]
  # chunks of 7 rows and 4 blocks: the sums run over many padded pieces, the reference over none
  fit = kmeans.fit(x, 5, init=init, iters=6, metric=metric, chunk=7, blocks=4)
  reference = _brute_force(x, init, 6, metric)
  assert np.all(np.asarray(fit.reseeded_T) == 0)
  np.testing.assert_allclose(fit.centroids_KD, reference[-1][0], atol=2e-5)
  np.testing.assert_allclose(fit.inertia_T, [r[2] for r in reference], rtol=1e-4)
  ids = np.asarray(kmeans.assign(x, fit.centroids_KD, metric, chunk=13))
  final = _brute_force(x, reference[-1][0], 1, metric)[0][1]
  np.testing.assert_array_equal(ids, final)
  np.testing.assert_array_equal(fit.counts_K, np.bincount(final, minlength=5))
  if metric == "cosine":
    np.testing.assert_allclose(np.linalg.norm(fit.centroids_KD, axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("metric", kmeans.METRICS)
def test_chunked_assignment_is_the_nearest_centroid(metric):
  rng = np.random.default_rng(2)
  x, c = rng.normal(size=(1001, 6)).astype(np.float32), rng.normal(size=(37, 6)).astype(np.float32)
  xm, cm = _on_metric(x, metric), _on_metric(c, metric)
  want = (-(xm @ cm.T) if metric == "cosine" else ((xm[:, None] - cm[None]) ** 2).sum(-1)).argmin(1)
  for chunk in (1001, 64, 5):
    np.testing.assert_array_equal(kmeans.assign(x, c, metric, chunk=chunk), want)


def test_an_empty_cluster_is_reseeded_with_the_farthest_point():
  x = _blobs()
  init = np.concatenate([x[:4], np.full((1, 4), 1000.0, np.float32)])  # cluster 4 is far from every point
  one = kmeans.fit(x, 5, init=init, iters=1)
  assert np.asarray(one.reseeded_T).tolist() == [1]
  dist = ((x[:, None].astype(np.float64) - init[None, :4]) ** 2).sum(-1).min(1)
  np.testing.assert_array_equal(one.centroids_KD[4], x[np.argmax(dist)])
  later = kmeans.fit(x, 5, init=init, iters=5)
  assert np.all(np.asarray(later.counts_K) > 0) and np.asarray(later.reseeded_T)[1:].sum() == 0


def test_two_empty_clusters_take_the_two_farthest_points_in_cluster_order():
  x = _blobs(seed=3)
  init = np.concatenate([x[:3], np.full((2, 4), 1000.0, np.float32)])
  one = kmeans.fit(x, 5, init=init, iters=1)
  dist = ((x[:, None].astype(np.float64) - init[None, :3]) ** 2).sum(-1).min(1)
  order = np.argsort(-dist, kind="stable")
  np.testing.assert_array_equal(one.centroids_KD[3:], x[order[:2]])


def test_an_empty_cluster_is_never_reseeded_with_a_row_of_weight_zero():
  x = _blobs()
  points = np.concatenate([x, np.full((3, 4), 500.0, np.float32)])  # far outliers of weight 0
  weights = np.concatenate([np.ones(len(x), np.float32), np.zeros(3, np.float32)])
  init = np.concatenate([x[:4], np.full((1, 4), 1000.0, np.float32)])
  one = kmeans.fit(points, 5, init=init, weights_N=weights, iters=1)
  dist = ((x[:, None].astype(np.float64) - init[None, :4]) ** 2).sum(-1).min(1)
  np.testing.assert_array_equal(one.centroids_KD[4], x[np.argmax(dist)])


def test_integer_weights_are_repeated_points():
  x = _blobs(n=120, seed=6)
  w = np.random.default_rng(7).integers(1, 4, len(x))
  init = x[np.random.default_rng(8).choice(len(x), 5, replace=False)]
  weighted = kmeans.fit(x, 5, init=init, weights_N=w, iters=4)
  repeated = kmeans.fit(np.repeat(x, w, axis=0), 5, init=init, iters=4)
  np.testing.assert_allclose(weighted.centroids_KD, repeated.centroids_KD, atol=1e-5)
  np.testing.assert_array_equal(weighted.counts_K, repeated.counts_K)
  np.testing.assert_allclose(weighted.inertia_T, repeated.inertia_T, rtol=1e-5)


def test_as_many_clusters_as_points_puts_a_centroid_on_every_point():
  x = _blobs(n=6, seed=9)
  fit = kmeans.fit(x, 6, iters=3)
  assert sorted(map(tuple, np.asarray(fit.centroids_KD))) == sorted(map(tuple, x))
  np.testing.assert_array_equal(fit.counts_K, np.ones(6))


@pytest.mark.parametrize("init", kmeans.INITS)
def test_the_same_seed_gives_the_same_centroids_and_another_seed_others(init):
  x = _blobs(n=400, k=8, seed=4)
  a, b = (kmeans.fit(x, 8, init=init, seed=0, iters=3) for _ in range(2))
  np.testing.assert_array_equal(a.centroids_KD, b.centroids_KD)
  c = kmeans.fit(x, 8, init=init, seed=1, iters=0)
  assert not np.array_equal(kmeans.fit(x, 8, init=init, seed=0, iters=0).centroids_KD, c.centroids_KD)


def test_kmeans_plus_plus_starts_from_distinct_data_points_and_weights_zero_rows_out():
  x = _blobs(n=200, seed=5)
  weights = np.ones(len(x), np.float32)
  weights[100:] = 0
  fit = kmeans.fit(x, 6, iters=0, weights_N=weights, seed=3)
  rows = [np.flatnonzero((x == c).all(1)) for c in np.asarray(fit.centroids_KD)]
  assert all(len(r) and r[0] < 100 for r in rows) and len({int(r[0]) for r in rows}) == 6


SCRIPT = r"""
import sys
import jax
import numpy as np
from tokenizers import kmeans
rng = np.random.default_rng(0)
x = (rng.normal(size=(12, 8))[rng.integers(0, 12, 1000)] * 3 + rng.normal(size=(1000, 8))).astype(np.float32)
out = {"devices": jax.device_count()}
far = np.concatenate([x[:11], np.full((1, 8), 100.0, np.float32)])  # cluster 11 empties and is re-seeded
for name, metric, init in (("euclidean", "euclidean", "kmeans++"), ("cosine", "cosine", "kmeans++"),
                           ("reseed", "euclidean", far)):
  fit = kmeans.fit(x, 12, metric=metric, iters=8, seed=7, chunk=4, init=init)  # 4 chunks of 4 rows per block
  out.update({f"{name}_{k}": np.asarray(v) for k, v in fit._asdict().items()})
  out[f"{name}_ids"] = np.asarray(kmeans.assign(x, fit.centroids_KD, metric))
np.savez(sys.argv[1], **out)
"""


def _run_on(tmp_path, devices):
  out = tmp_path / f"kmeans{devices}.npz"
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, env=env, capture_output=True)
  return dict(np.load(out))


def test_one_and_eight_devices_give_identical_centroids(tmp_path):
  one, eight = _run_on(tmp_path, 1), _run_on(tmp_path, 8)
  assert int(one.pop("devices")) == 1 and int(eight.pop("devices")) == 8
  for key in one:
    np.testing.assert_array_equal(eight[key], one[key], err_msg=key)
  assert np.all(one["euclidean_counts_K"] > 0) and np.all(one["cosine_counts_K"] > 0)
  assert one["reseed_reseeded_T"][0] == 1


@pytest.mark.parametrize("call, match", [
    (lambda x: kmeans.fit(x, 301), r"k=301 needs 1 <= k <= the number of points \(300\)"),
    (lambda x: kmeans.fit(x, 3, metric="cosin"), "metric must be one of"),
    (lambda x: kmeans.fit(x, 3, init=x[:2]), r"initial centroids must be \[k, D\] = \[3, 4\]"),
    (lambda x: kmeans.fit(x, 3, init="kmeans+"), "init must be one of"),
    (lambda x: kmeans.fit(np.where(x > 3, np.nan, x), 3), "NaN"),
    (lambda x: kmeans.fit(x[:, :, None], 3), r"points \[N, D\]"),
    (lambda x: kmeans.assign(x, x[:3, :2]), "dimension 4 cannot be assigned to centroids of dimension 2"),
])
def test_bad_input_is_named(call, match):
  with pytest.raises(ValueError, match=match):
    call(_blobs())
