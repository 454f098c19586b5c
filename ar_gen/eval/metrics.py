"""Inception score and improved precision / recall of feature sets (the metrics of `ar-gen fid` besides FID).

The Inception score is computed with numpy on the host from logits [N, K]; precision and recall (Kynkäänniemi et
al. 2019) compare k-nearest-neighbour balls of features [N, F], with the pairwise distances jitted and computed in
blocks of rows. FID itself is in `fid_stats.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def inception_score(logits_NK: np.ndarray, splits: int = 10) -> tuple[float, float]:
  """exp(E_x KL(p(y|x) || p(y))) over `splits` equal parts: (mean, std).

  The rows are put in a fixed pseudo-random order (seed 0) before splitting: the standard code splits in file
  order, which assumes shuffled samples; class-ordered sample files (as `ar-gen sample --classes all` writes)
  would otherwise put one class in each split and score about 1.
  """
  if len(logits_NK) < splits:
    raise ValueError(f"the Inception score over {splits} splits needs at least {splits} images, got "
                     f"{len(logits_NK)}")
  logits_NK = logits_NK[np.random.default_rng(0).permutation(len(logits_NK))]
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
