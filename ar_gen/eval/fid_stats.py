"""Feature statistics and the Fréchet distance, in float64 on the host (the numbers FID papers report).

FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with S the unbiased sample covariance (`np.cov`), and the
matrix square root from `scipy.linalg.sqrtm`. When the product is singular (fewer samples than feature
dimensions) the square root can come out non-finite: then, as pytorch-fid does, eps is added to both diagonals
and the root recomputed; a warning says so. A complex root with a non-negligible imaginary diagonal is an error,
never silently dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings

import numpy as np
from scipy import linalg

log = logging.getLogger("ar_gen.fid")


@dataclasses.dataclass
class Stats:
  """mu [D], sigma [D, D] (float64) and the number of samples they came from."""

  mu: np.ndarray
  sigma: np.ndarray
  count: int


def statistics(features_ND: np.ndarray) -> Stats:
  """Mean and unbiased covariance of features [N, D]; refuses N < 2 and non-finite features."""
  features_ND = np.asarray(features_ND, np.float64)
  if features_ND.ndim != 2:
    raise ValueError(f"features must be [N, D], got shape {features_ND.shape}")
  if len(features_ND) < 2:
    raise ValueError(f"the covariance needs at least 2 samples, got {len(features_ND)}")
  if not np.isfinite(features_ND).all():
    raise ValueError(f"{int((~np.isfinite(features_ND)).any(axis=1).sum())} of {len(features_ND)} feature rows "
                     "hold NaN or inf")
  return Stats(features_ND.mean(axis=0), np.cov(features_ND, rowvar=False), len(features_ND))


def frechet_distance(a: Stats, b: Stats, eps: float = 1e-6) -> float:
  """The Fréchet distance between two Gaussians given by their statistics."""
  for name, s in (("first", a), ("second", b)):
    if not (np.isfinite(s.mu).all() and np.isfinite(s.sigma).all()):
      raise ValueError(f"the {name} statistics hold NaN or inf")
  if a.mu.shape != b.mu.shape or a.sigma.shape != b.sigma.shape:
    raise ValueError(f"statistics of different feature sizes: {a.mu.shape} vs {b.mu.shape}")
  diff = a.mu - b.mu
  with warnings.catch_warnings():  # a singular product is handled below, not only warned about
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    root, _ = linalg.sqrtm(a.sigma.dot(b.sigma), disp=False)
  if not np.isfinite(root).all():
    log.warning("FID: the covariance product is singular; adding %g to the diagonals", eps)
    offset = np.eye(a.sigma.shape[0]) * eps
    root = linalg.sqrtm((a.sigma + offset).dot(b.sigma + offset))
  if np.iscomplexobj(root):
    if not np.allclose(np.diagonal(root).imag, 0, atol=1e-3):
      raise ValueError(f"FID: the matrix square root has an imaginary part of {np.max(np.abs(root.imag)):.3g}")
    root = root.real
  return float(diff.dot(diff) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(root))
