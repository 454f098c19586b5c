"""Inception score and improved precision / recall of feature sets (the metrics of `ar-gen fid` besides FID).

The Inception score is computed with numpy on the host from logits [N, K]; precision and recall (Kynkäänniemi et
al. 2019) compare k-nearest-neighbour balls of features [N, F], with the pairwise distances jitted and computed in
blocks of rows. FID itself is in `fid_stats.py`.

Split order: the original Inception-score code (improved-gan) and ADM's evaluator split the rows in the order they
come, which assumes shuffled samples; a class-sorted file (one class after another) puts few classes in each split
and deflates the score. Here the score is a function of the set of rows, not of their order: the rows are first
sorted by their content (`content_order`), then put in a fixed pseudo-random order (seed 0) and split.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def content_order(rows_NK: np.ndarray) -> np.ndarray:
  """Indices that sort rows by their content: by the row's maximum, ties broken by the row's bytes.

  The same rows in any order give the same sorted rows; a tiny change of one row moves it among its neighbours in
  the sort instead of reshuffling everything (as a hash of the bytes would).
  """
  rows_NK = np.ascontiguousarray(rows_NK)
  as_bytes = rows_NK.view(np.dtype((np.void, rows_NK.dtype.itemsize * rows_NK.shape[1]))).ravel()
  return np.lexsort((as_bytes, rows_NK.max(axis=1)))


def inception_score(logits_NK: np.ndarray, splits: int = 10) -> tuple[float, float]:
  """exp(E_x KL(p(y|x) || p(y))) over `splits` equal parts: (mean, std), whatever the order of the rows.

  The rows are sorted by content, put in a fixed pseudo-random order (seed 0) and split (see the module
  docstring): a class-ordered sample file scores as its shuffled copies do.
  """
  if len(logits_NK) < splits:
    raise ValueError(f"the Inception score over {splits} splits needs at least {splits} images, got "
                     f"{len(logits_NK)}")
  order = content_order(logits_NK)[np.random.default_rng(0).permutation(len(logits_NK))]
  logits_NK = logits_NK[order]
  logp = logits_NK - np.logaddexp.reduce(logits_NK, axis=1, keepdims=True)
  scores = []
  for part in np.array_split(logp, splits):
    log_marginal = np.log(np.exp(part).mean(axis=0))
    scores.append(np.exp(np.mean(np.sum(np.exp(part) * (part - log_marginal), axis=1))))
  return float(np.mean(scores)), float(np.std(scores))


@jax.jit
def _sq_dists(a_MF, b_NF):
  return jnp.maximum(jnp.sum(a_MF ** 2, 1)[:, None] + jnp.sum(b_NF ** 2, 1)[None] - 2 * a_MF @ b_NF.T, 0.0)


def _kth_radii(x_NF: np.ndarray, k: int, block: int) -> np.ndarray:
  """Squared distance of each row to its k-th nearest other row."""
  x = jnp.asarray(x_NF, jnp.float32)
  out = [np.asarray(-jax.lax.top_k(-_sq_dists(x[i:i + block], x), k + 1)[0][:, k])
         for i in range(0, len(x_NF), block)]
  return np.concatenate(out)


def _covered(points_MF: np.ndarray, centres_NF: np.ndarray, radii_N: np.ndarray, block: int) -> float:
  """Fraction of points inside at least one centre's k-NN ball."""
  c, r = jnp.asarray(centres_NF, jnp.float32), jnp.asarray(radii_N, jnp.float32)
  hits = [np.asarray(jnp.any(_sq_dists(jnp.asarray(points_MF[i:i + block], jnp.float32), c) <= r[None], axis=1))
          for i in range(0, len(points_MF), block)]
  return float(np.concatenate(hits).mean())


def precision_recall(real_NF: np.ndarray, fake_MF: np.ndarray, k: int = 3, block: int = 1024) -> tuple[float, float]:
  """Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour balls."""
  if min(len(real_NF), len(fake_MF)) <= k:
    raise ValueError(f"precision/recall with k={k} needs more than {k} images per set")
  precision = _covered(fake_MF, real_NF, _kth_radii(real_NF, k, block), block)
  recall = _covered(real_NF, fake_MF, _kth_radii(fake_MF, k, block), block)
  return precision, recall
