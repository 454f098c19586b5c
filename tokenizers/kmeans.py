"""k-means in JAX: one implementation for the coarse-to-fine codebook clusters and, next, the discriminative tokens.

`fit(points_ND, k, ...)` runs k-means++ initialisation (or `init='random'`, or given centroids) and then `iters`
Lloyd iterations, all in one jitted function; `assign(points_ND, centroids_KD)` gives the nearest centroid of each
point in chunks of rows (memory: `chunk` x K distances at a time). Two metrics: `euclidean` (least squared
distance, centroid = mean) and `cosine` (spherical k-means: points and centroids on the unit sphere, the largest
cosine wins, centroid = normalised sum; LlamaGen's codes are l2-normalised, so CTF clusters them this way). The
matrix products run at full float32 precision (`Precision.HIGHEST`: TPU's default is one bfloat16 pass).

Data sharding. The points (padded with weight-0 rows) are laid out as [blocks, S, chunk, D] with the block axis
sharded over a 1-D mesh of every device; each device runs its blocks one after another (`shard_map`; memory: one
chunk x K distance matrix), a block's sums, counts and inertia accumulated over its S chunks in order, and the
per-block partial sums are then added in block order on every device. The blocks are the unit of the reduction,
not the devices, so the result does not depend on how many devices share the data (as long as the device count
divides `blocks`; otherwise the blocks are rounded up to a multiple of it and the layout changes): on CPU the same
seed gives the same bits on 1 device and on 8 (tested); not yet run on a GPU or TPU. Sums are one-hot matrix
products (no scatter-add, whose order is not fixed on GPUs); each point's distance, which the inertia and the
re-seeding read, is summed pairwise over D (XLA tiles a reduction by the array's shape).

Empty clusters: after each assignment, the clusters that received no weight are re-seeded with the points farthest
from their assigned centroids, the j-th empty cluster (by index) with the j-th farthest point (padding and
zero-weight rows never); the count is in `KMeans.reseeded_T`. Everything is a pure function of the inputs and the
seed.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ar_gen.nn.layers import l2_normalize

METRICS = ("euclidean", "cosine")
HIGHEST = jax.lax.Precision.HIGHEST
INITS = ("kmeans++", "random")


class KMeans(NamedTuple):
  """A k-means fit: centroids [K, D]; the weight assigned to each cluster by the final centroids [K]; per
  iteration the inertia before its update (weighted sum of distances: squared Euclidean, or 1 - cosine) and the
  number of empty clusters re-seeded [iters]; the final inertia."""

  centroids_KD: jax.Array
  counts_K: jax.Array
  inertia_T: jax.Array
  reseeded_T: jax.Array
  final_inertia: jax.Array


def _check_metric(metric: str) -> None:
  if metric not in METRICS:
    raise ValueError(f"k-means metric must be one of {METRICS}, got {metric!r}")


def _check(points_ND, k: int, metric: str) -> None:
  _check_metric(metric)
  if np.ndim(points_ND) != 2:
    raise ValueError(f"k-means needs points [N, D], got shape {np.shape(points_ND)}")
  if not 1 <= k <= np.shape(points_ND)[0]:
    raise ValueError(f"k-means with k={k} needs 1 <= k <= the number of points ({np.shape(points_ND)[0]})")


def _on_metric(x_ND: jax.Array, metric: str) -> jax.Array:
  x_ND = x_ND.astype(jnp.float32)
  return l2_normalize(x_ND) if metric == "cosine" else x_ND


def distances(x_CD: jax.Array, centroids_KD: jax.Array, metric: str) -> jax.Array:
  """[C, K] squared Euclidean distances (clipped at 0) or 1 - cosine, of points and centroids on the metric."""
  dots_CK = jnp.matmul(x_CD, centroids_KD.T, precision=HIGHEST)  # not one bf16 pass (TPU's default)
  if metric == "cosine":
    return 1.0 - dots_CK
  sq = jnp.sum(x_CD * x_CD, -1)[:, None] - 2.0 * dots_CK + jnp.sum(centroids_KD * centroids_KD, -1)[None]
  return jnp.maximum(sq, 0.0)


def _point_distance(x_ND: jax.Array, c_D: jax.Array, metric: str) -> jax.Array:
  """Each point's distance to one centroid [D] or to its own [N, D], [N], summed over D by `pairwise_sum`: its
  rounding does not depend on how many points a device holds (XLA tiles a reduction by the array's shape)."""
  if metric == "cosine":
    return 1.0 - pairwise_sum(x_ND * c_D)
  return pairwise_sum(jnp.square(x_ND - c_D))


def assign(points_ND, centroids_KD, metric: str = "euclidean", chunk: int = 4096) -> jax.Array:
  """The nearest centroid of every point [N] int32, computed `chunk` rows at a time (cosine: points and centroids
  are normalised first)."""
  _check_metric(metric)
  if np.shape(points_ND)[-1] != np.shape(centroids_KD)[-1]:
    raise ValueError(f"points of dimension {np.shape(points_ND)[-1]} cannot be assigned to centroids of dimension "
                     f"{np.shape(centroids_KD)[-1]}")
  return _assign(jnp.asarray(points_ND), jnp.asarray(centroids_KD), metric, int(chunk))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _assign(points_ND, centroids_KD, metric, chunk):
  n = points_ND.shape[0]
  chunk = max(1, min(chunk, n))
  pad = -n % chunk
  x = _on_metric(jnp.pad(points_ND, ((0, pad), (0, 0))), metric).reshape(-1, chunk, points_ND.shape[1])
  c = _on_metric(centroids_KD, metric)
  ids = jax.lax.map(lambda x_CD: jnp.argmin(distances(x_CD, c, metric), -1).astype(jnp.int32), x)
  return ids.reshape(-1)[:n]


class _Blocked(NamedTuple):
  x_nSCD: jax.Array  # [blocks, S, C, D] on the metric, padding rows zero
  w_nSC: jax.Array  # [blocks, S, C], padding rows zero


def _log_weight(w: jax.Array) -> jax.Array:
  """log w, -inf where w = 0 (padding and zero-weight rows are never drawn)."""
  return jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)


def _layout(n: int, blocks: int, chunk: int, devices: int) -> tuple[int, int, int]:
  """(blocks, chunks per block S, rows per chunk C) covering n points; blocks a multiple of the device count."""
  nb = -(-max(blocks, 1) // devices) * devices
  rows = min(max(1, chunk), -(-n // nb))
  return nb, -(-n // (nb * rows)), rows


def _blocked(points_ND, weights_N, nb: int, s: int, c: int, mesh: Mesh, metric: str) -> _Blocked:
  n, d = np.shape(points_ND)
  pad = nb * s * c - n
  x = np.pad(np.asarray(points_ND, np.float32), ((0, pad), (0, 0)))
  w = np.pad(np.asarray(weights_N, np.float32), (0, pad))
  if metric == "cosine":
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    x = x / np.maximum(norm, 1e-6)
  sharding = NamedSharding(mesh, P("data"))
  put = lambda a: jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])
  return _Blocked(put(x.reshape(nb, s, c, d)), put(w.reshape(nb, s, c)))


def pairwise_sum(x: jax.Array) -> jax.Array:
  """The sum over the last axis by halving (an odd width padded with a zero): the same additions in the same order
  whatever the batch around it, unlike XLA's reductions, which are tiled by shape."""
  while x.shape[-1] > 1:
    if x.shape[-1] % 2:
      x = jnp.concatenate([x, jnp.zeros_like(x[..., :1])], axis=-1)
    half = x.shape[-1] // 2
    x = x[..., :half] + x[..., half:]
  return x[..., 0]


def _block_stats(x_SCD, w_SC, centroids_KD, metric):
  """One block's (sums [K, D], weights [K], inertia, distance of each point to its centroid [S, C] with -inf on
  padding) under centroids, accumulated chunk by chunk in order."""
  k, d = centroids_KD.shape

  def chunk_stats(carry, xw):
    x_CD, w_C = xw
    ids_C = jnp.argmin(distances(x_CD, centroids_KD, metric), -1)
    # each point's distance again, elementwise: a matrix product's rounding depends on how XLA tiles it for the
    # rows one device holds, an elementwise one does not (the inertia and the re-seeding read it)
    dist_C = _point_distance(x_CD, jnp.take(centroids_KD, ids_C, axis=0), metric)
    onehot_CK = (ids_C[:, None] == jnp.arange(k)[None]).astype(jnp.float32) * w_C[:, None]
    sums, counts, inertia = carry
    carry = (sums + jnp.matmul(onehot_CK.T, x_CD, precision=HIGHEST), counts + jnp.sum(onehot_CK, 0),
             inertia + pairwise_sum(w_C * dist_C))
    return carry, jnp.where(w_C > 0, dist_C, -jnp.inf)

  init = (jnp.zeros((k, d), jnp.float32), jnp.zeros((k,), jnp.float32), jnp.zeros((), jnp.float32))
  (sums, counts, inertia), dist_SC = jax.lax.scan(chunk_stats, init, (x_SCD, w_SC))
  return sums, counts, inertia, dist_SC


def _reduce_blocks(tree, mesh: Mesh):
  """The sum over the block axis, in block order, on every device (independent of the device count)."""
  tree = jax.lax.with_sharding_constraint(tree, NamedSharding(mesh, P()))
  first = jax.tree.map(lambda a: a[0], tree)
  return jax.lax.fori_loop(1, jax.tree.leaves(tree)[0].shape[0],
                           lambda i, acc: jax.tree.map(lambda s, a: s + a[i], acc, tree), first)


def _stats(data: _Blocked, centroids_KD, metric, mesh: Mesh):
  """(sums [K, D], weights [K], inertia, each point's distance [blocks, S, C]): each device runs its own blocks one
  after another (memory: one chunk x K distance matrix), then the blocks' partial sums are added in block order."""
  def local(x_nSCD, w_nSC, c_KD):
    return jax.lax.map(lambda xw: _block_stats(xw[0], xw[1], c_KD, metric), (x_nSCD, w_nSC))

  per_block = jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P("data"), P()), out_specs=P("data"),
                            check_vma=False)(data.x_nSCD, data.w_nSC, centroids_KD)
  sums_KD, counts_K, inertia = _reduce_blocks(per_block[:3], mesh)
  return sums_KD, counts_K, inertia, per_block[3]


def _update(data: _Blocked, centroids_KD, metric, mesh: Mesh):
  """One Lloyd iteration: (new centroids, inertia before it, clusters re-seeded)."""
  k, d = centroids_KD.shape
  sums_KD, counts_K, inertia, dist_nSC = _stats(data, centroids_KD, metric, mesh)
  if metric == "cosine":
    means_KD = l2_normalize(sums_KD)
  else:
    means_KD = sums_KD / jnp.maximum(counts_K, 1e-30)[:, None]
  empty_K = counts_K <= 0
  far_K = jax.lax.top_k(dist_nSC.reshape(-1), k)[1]  # the k points farthest from their centroids (-inf: padding)
  seeds_KD = jnp.take(data.x_nSCD.reshape(-1, d), far_K, axis=0)
  rank_K = jnp.cumsum(empty_K) - 1
  new_KD = jnp.where(empty_K[:, None], seeds_KD[jnp.clip(rank_K, 0, k - 1)], means_KD)
  return new_KD, inertia, jnp.sum(empty_K).astype(jnp.int32)


def _kmeans_plus_plus(data: _Blocked, k, key, metric):
  """k-means++ (weighted): each next centroid is a point drawn with probability weight x distance to the nearest
  centroid so far (Gumbel-max over every padded row, so the draw does not depend on the sharding)."""
  d = data.x_nSCD.shape[-1]
  x_ND, w_N = data.x_nSCD.reshape(-1, d), data.w_nSC.reshape(-1)
  log_w = _log_weight(w_N)
  first = jnp.take(x_ND, jax.random.categorical(jax.random.fold_in(key, 0), log_w), axis=0)
  centroids = jnp.zeros((k, d), jnp.float32).at[0].set(first)

  def pick(j, carry):
    centroids, dist_N = carry
    score_N = w_N * dist_N
    # every point already a centroid: any point will do
    logits = jnp.where(jnp.any(score_N > 0), _log_weight(score_N), log_w)
    c = jnp.take(x_ND, jax.random.categorical(jax.random.fold_in(key, j), logits), axis=0)
    return centroids.at[j].set(c), jnp.minimum(dist_N, _point_distance(x_ND, c, metric))

  centroids, _ = jax.lax.fori_loop(1, k, pick, (centroids, _point_distance(x_ND, first, metric)))
  return centroids


def _random_init(data: _Blocked, k, key):
  """k distinct points drawn without replacement, in proportion to their weights (Gumbel top-k)."""
  d = data.x_nSCD.shape[-1]
  w_N = data.w_nSC.reshape(-1)
  g_N = jax.random.gumbel(key, w_N.shape) + _log_weight(w_N)
  return jnp.take(data.x_nSCD.reshape(-1, d), jax.lax.top_k(g_N, k)[1], axis=0)


def fit(points_ND, k: int, *, metric: str = "euclidean", iters: int = 20, seed: int = 0, init="kmeans++",
        weights_N=None, chunk: int = 4096, blocks: int = 64, mesh: Mesh | None = None) -> KMeans:
  """k-means of points [N, D] (host arrays, the same on every process) into `k` clusters.

  init: 'kmeans++' (K passes over the data: for large K, fit on a sample or use 'random'), 'random' (k distinct
  points) or initial centroids [K, D]. weights_N: a weight per point (default 1). chunk: rows per distance matrix
  (memory chunk x K per device). blocks: the reduction blocks (see the module docstring). mesh: a 1-D mesh with
  axis 'data' (default: every device).
  """
  _check(points_ND, k, metric)
  n, d = np.shape(points_ND)
  weights_N = np.ones(n, np.float32) if weights_N is None else np.asarray(weights_N, np.float32)
  if weights_N.shape != (n,) or np.any(weights_N < 0) or not np.all(np.isfinite(weights_N)):
    raise ValueError(f"k-means weights must be [N] = [{n}] finite and non-negative, got shape {weights_N.shape}")
  if np.count_nonzero(weights_N) < k:
    raise ValueError(f"k-means with k={k} needs at least k points of positive weight, got "
                     f"{np.count_nonzero(weights_N)}")
  if not np.all(np.isfinite(points_ND)):
    raise ValueError("k-means points contain NaN or infinite values")
  if isinstance(init, str) and init not in INITS:
    raise ValueError(f"k-means init must be one of {INITS} or centroids [K, D], got {init!r}")
  if not isinstance(init, str) and np.shape(init) != (k, d):
    raise ValueError(f"initial centroids must be [k, D] = [{k}, {d}], got shape {np.shape(init)}")
  mesh = mesh or Mesh(np.asarray(jax.devices()), ("data",))
  nb, s, c = _layout(n, blocks, chunk, mesh.size)
  data = _blocked(points_ND, weights_N, nb, s, c, mesh, metric)
  given = None if isinstance(init, str) else _on_metric(jnp.asarray(init), metric)
  return _fit(data, given, jax.random.PRNGKey(seed), k, metric, int(iters), init if given is None else "given",
              mesh)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _fit(data, given, key, k, metric, iters, init, mesh):
  replicated = NamedSharding(mesh, P())
  if init == "given":
    centroids = given
  elif init == "random":
    centroids = _random_init(data, k, key)
  else:
    centroids = _kmeans_plus_plus(data, k, key, metric)
  centroids = jax.lax.with_sharding_constraint(centroids, replicated)

  def iteration(centroids_KD, _):
    new, inertia, reseeded = _update(data, centroids_KD, metric, mesh)
    return jax.lax.with_sharding_constraint(new, replicated), (inertia, reseeded)

  centroids, (inertia_T, reseeded_T) = jax.lax.scan(iteration, centroids, None, length=iters)
  _, counts, final, _ = _stats(data, centroids, metric, mesh)
  return KMeans(centroids, counts, inertia_T, reseeded_T, final)
