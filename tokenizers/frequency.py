"""Frequency-band residual quantizer (NFIG, arXiv 2503.07076): VAR's multi-scale quantizer whose scale k quantizes
the latent low-passed to band k, not the whole latent.

For a latent z [B, h, h, D] and band masks M_0 .. M_{K-1} over the 2-D FFT bins (per channel; disjoint, summing
to exactly 1, Hermitian-symmetric, the last band holding every bin no earlier band took):
  LP_k(z) = real(IFFT2(FFT2(z) * sum_{j <= k} M_j))        # z low-passed to band k; LP_{K-1}(z) = z exactly
  r_k     = area_downsample(LP_k(z) - f_hat, p_k)           # VAR's r_k with z replaced by LP_k(z)
and the rest is `tokenizers/multiscale.py` (shared codebook, bicubic up, phi refinements, the loss against the same
targets, the token layout and the residual-quantizer protocol the next-scale family samples through). A cumulative
mask that is all ones (every bin taken) returns z itself, so all-pass masks give VAR's tokens bit for bit.

Band rules (`band_rule`), for token maps of sides p_0 < ... < p_{K-1} on an h x h latent, with integer frequencies
(u, v) in [-h/2, h/2) per axis:
- `radial_token_fraction` (the paper's): band k holds radii |(u, v)| up to R * (tokens of maps 0..k) / (all tokens),
  R the largest radius. On a 16 x 16 latent the small maps' share of the radius holds no bin at all.
- `linf_nyquist`: band k holds the frequencies up to its own map's Nyquist, max(|u|, |v|) <= floor(p_k / 2).
- `bins_quantile`: bins sorted by radius; band k's cumulative share of the bins tracks its cumulative share of
  the tokens, rounded up (the first band holds at least the mean; bins of one radius stay in one band, so the
  masks stay Hermitian-symmetric).
Every rule's last band is inclusive. The bin count of every band is logged when the quantizer is built.
"""

from __future__ import annotations

import functools
import logging
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from tokenizers import multiscale

BAND_RULES = ("radial_token_fraction", "linf_nyquist", "bins_quantile")
NFIG_SCALES = multiscale.VAR_SCALES  # NFIG's 10 bands on VAR's token maps

log = logging.getLogger(__name__)


def default_config() -> ml_collections.ConfigDict:
  """`model.frequency`: the multi-scale quantizer's keys (`tokenizers/multiscale.py`) and `band_rule`."""
  c = multiscale.default_config()
  c.scales = NFIG_SCALES
  c.band_rule = "bins_quantile"
  return c


def from_config(c: ml_collections.ConfigDict, grid: tuple[int, int], rngs: nnx.Rngs,
                param_dtype=jnp.float32) -> "FrequencyBandQuantizer":
  del grid  # the scales say it; the tokenizer checks that the last one is the grid
  return FrequencyBandQuantizer(c.codebook_size, c.code_dim, tuple(c.scales), band_rule=c.band_rule, beta=c.beta,
                                phi_ratio=c.phi_ratio, num_phi=c.num_phi, normalize=c.normalize,
                                prefix_fraction=c.prefix_fraction, rngs=rngs, param_dtype=param_dtype)


def frequency_grid(side: int) -> tuple[np.ndarray, np.ndarray]:
  """Integer frequencies (u, v) [side, side] of the 2-D FFT's bins, in numpy's FFT order."""
  k = np.round(np.fft.fftfreq(side) * side).astype(np.int64)
  return np.meshgrid(k, k, indexing="ij")


def _cutoffs(rule: str, side: int, scales: Sequence[int]) -> tuple[np.ndarray, list[float]]:
  """The per-bin key [side, side] a rule orders bins by, and band k's largest key (k < K - 1)."""
  u, v = frequency_grid(side)
  token_share = np.cumsum([p * p for p in scales])[:-1] / sum(p * p for p in scales)
  if rule == "linf_nyquist":
    return np.maximum(np.abs(u), np.abs(v)).astype(np.float64), [float(p // 2) for p in scales[:-1]]
  radius = np.sqrt(u.astype(np.float64) ** 2 + v.astype(np.float64) ** 2)
  if rule == "radial_token_fraction":
    return radius, list(radius.max() * token_share)
  if rule == "bins_quantile":
    ordered = np.sort(radius.ravel())
    return radius, [float(ordered[max(int(np.ceil(s * ordered.size - 1e-9)) - 1, 0)]) for s in token_share]
  raise ValueError(f"model.frequency.band_rule must be one of {BAND_RULES}, got {rule!r}")


def band_masks(side: int, scales: Sequence[int], rule: str) -> np.ndarray:
  """Disjoint 0/1 masks [K, side, side] over the FFT bins of a side x side latent that sum to 1, one per band."""
  key, cutoffs = _cutoffs(rule, side, scales)
  masks = np.zeros((len(scales), side, side), np.float32)
  taken = np.zeros((side, side), bool)
  for k, cut in enumerate(cutoffs):
    band = (key <= cut + 1e-9) & ~taken
    masks[k], taken = band, taken | band
  masks[-1] = ~taken  # the last band is inclusive: no bin (the corner ones included) is lost
  return masks


@functools.lru_cache(maxsize=None)
def _rule_masks(side: int, scales: tuple[int, ...], rule: str) -> np.ndarray:
  """`band_masks`, computed and logged (the bins per band) once per process for a latent size, maps and rule."""
  masks = band_masks(side, scales, rule)
  log.info("frequency bands (%s) on a %d x %d latent: bins per band %s", rule, side, side,
           [int(m.sum()) for m in masks])
  return masks


def band_limited(z_BhwD: jax.Array, masks_hw: Sequence[np.ndarray]) -> list[jax.Array]:
  """z with only the FFT bins of each mask (per channel, over the spatial axes; one FFT of z for all), z itself
  for a mask that keeps every bin."""
  spectrum = None
  out = []
  for mask_hw in masks_hw:
    if mask_hw.all():
      out.append(z_BhwD)
      continue
    if spectrum is None:
      spectrum = jnp.fft.fft2(z_BhwD.astype(jnp.float32), axes=(1, 2))
    kept = jnp.fft.ifft2(spectrum * jnp.asarray(mask_hw)[None, :, :, None], axes=(1, 2))
    out.append(jnp.real(kept).astype(jnp.float32))
  return out


def low_pass(z_BhwD: jax.Array, mask_hw: np.ndarray) -> jax.Array:
  """z with only the FFT bins of `mask_hw`; z itself if every bin is kept."""
  return band_limited(z_BhwD, [mask_hw])[0]


class FrequencyBandQuantizer(multiscale.MultiScaleQuantizer):
  """Residual quantization of the band-limited targets LP_k(z) over the token maps `scales`."""

  def __init__(self, codebook_size: int, code_dim: int, scales: Sequence[int], *, band_rule: str = "bins_quantile",
               masks: np.ndarray | None = None, rngs: nnx.Rngs, **kwargs):
    super().__init__(codebook_size, code_dim, scales, rngs=rngs, **kwargs)
    side = self.scales[-1]
    masks = _rule_masks(side, self.scales, band_rule) if masks is None else np.asarray(masks, np.float32)
    if masks.shape != (len(self.scales), side, side):
      raise ValueError(f"band masks of shape {masks.shape} do not fit {len(self.scales)} bands on a {side} x {side} "
                       "latent")
    # static (nested tuples of bools, not arrays, so that nnx keeps them out of the module's state)
    self.kept = tuple(tuple(map(tuple, m.tolist())) for m in np.cumsum(masks, axis=0) > 0.5)

  def targets(self, z_BhwD: jax.Array) -> list[jax.Array]:
    """LP_k(z) for every band k: the latent low-passed to band k (z itself at the last band)."""
    return band_limited(z_BhwD, [np.array(kept, bool) for kept in self.kept])
