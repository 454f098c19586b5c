"""Vector quantizer with l2-normalised low-dimensional codes (LlamaGen style), or plain Euclidean codes (VAR).

Inputs are projected features z [B, h, w, D] (D small, e.g. 8). With `normalize` (the default) both z and the
codebook are l2-normalised and the nearest code is the one of largest cosine similarity; without it the codes are
used as they are and the nearest code is the one of least squared distance. The codebook loss pulls codes to
sg(z), the commitment loss pulls z to sg(code), and the straight-through estimator passes the decoder's gradient
to the encoder. Dead codes (EMA usage below a threshold) can be restarted from encoder outputs of the current
batch (`restart_dead_codes`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen.layout import TokenLayout
from ar_gen.nn.layers import l2_normalize


def default_config() -> ml_collections.ConfigDict:
  """`model.vq`: codebook size x code width, l2-normalised (cosine) or Euclidean lookup, commitment weight beta,
  dead-code restart every N steps (0 = off) below `restart_threshold / K` EMA usage."""
  return ml_collections.ConfigDict(dict(codebook_size=16384, code_dim=8, normalize=True, beta=0.25,
                                        restart_every_steps=0, restart_threshold=0.03))


def from_config(c: ml_collections.ConfigDict, grid: tuple[int, int], rngs: nnx.Rngs,
                param_dtype=jnp.float32) -> "VectorQuantizer":
  return VectorQuantizer(c.codebook_size, c.code_dim, grid, beta=c.beta, normalize=c.normalize, rngs=rngs,
                         param_dtype=param_dtype)


class CodeUsage(nnx.Variable):
  """Non-trainable running statistics of code use."""


def code_histogram(indices: jax.Array, codebook_size: int) -> jax.Array:
  """Counts of each code among `indices` (any shape) -> float32 [K]."""
  return jnp.zeros((codebook_size,), jnp.float32).at[indices.reshape(-1)].add(1.0)


class VectorQuantizer(nnx.Module):
  """Nearest-code quantizer over an l2-normalised codebook [K, D]."""

  def __init__(self, codebook_size: int, code_dim: int, grid: tuple[int, int] = (1, 1), *, beta: float = 0.25,
               usage_decay: float = 0.99, normalize: bool = True, rngs: nnx.Rngs, param_dtype=jnp.float32):
    self.codebook_size, self.code_dim, self.beta, self.usage_decay = codebook_size, code_dim, beta, usage_decay
    self.normalize, self.grid = normalize, tuple(grid)
    self.codebook = nnx.Param(jax.random.normal(rngs.params(), (codebook_size, code_dim), param_dtype))
    self.ema_usage = CodeUsage(jnp.full((codebook_size,), 1.0 / codebook_size, jnp.float32))

  def codes(self) -> jax.Array:
    """The codebook [K, D] in float32 (l2-normalised with `normalize`)."""
    codes_KD = self.codebook[...].astype(jnp.float32)
    return l2_normalize(codes_KD) if self.normalize else codes_KD

  @property
  def layout(self) -> TokenLayout:
    """One map, the latent's grid, in raster order."""
    return TokenLayout.raster(self.grid, self.codebook_size)

  def nearest(self, z_BhwD: jax.Array) -> jax.Array:
    """Nearest code index [B, h, w]: largest cosine similarity, or least squared distance without `normalize`."""
    z_ND = z_BhwD.astype(jnp.float32).reshape(-1, self.code_dim)
    codes_KD = self.codes()
    if self.normalize:
      score_NK = l2_normalize(z_ND) @ codes_KD.T
    else:  # -|z - c|^2 up to the per-row constant |z|^2
      score_NK = 2 * z_ND @ codes_KD.T - jnp.sum(codes_KD * codes_KD, axis=-1)
    return jnp.argmax(score_NK, axis=-1).reshape(z_BhwD.shape[:-1])

  def indices(self, z_BhwD: jax.Array) -> jax.Array:
    """Token ids [B, L] (the nearest codes in raster order)."""
    return self.nearest(z_BhwD).reshape(z_BhwD.shape[0], -1)

  def lookup(self, indices: jax.Array) -> jax.Array:
    """Code vectors [..., D] for indices of any shape."""
    return jnp.take(self.codes(), indices, axis=0)

  def embed(self, tokens_BL: jax.Array, num_maps: int | None = None) -> jax.Array:
    """Decoder input [B, h, w, D] from token ids [B, L] (one map: `num_maps` is ignored)."""
    del num_maps
    return self.lookup(self.layout.split(tokens_BL)[0])

  def __call__(self, z_BhwD: jax.Array, train: bool = False,
               rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array, dict]:
    """Returns (straight-through quantized z, token ids [B, L], aux with losses and the code histogram)."""
    del rng
    z = z_BhwD.astype(jnp.float32)
    z = l2_normalize(z) if self.normalize else z
    idx_Bhw = self.nearest(z)
    zq = self.lookup(idx_Bhw)
    codebook_loss = jnp.mean(jnp.square(zq - jax.lax.stop_gradient(z)))
    commit_loss = jnp.mean(jnp.square(jax.lax.stop_gradient(zq) - z))
    hist_K = code_histogram(idx_Bhw, self.codebook_size)
    if train:
      freq_K = hist_K / idx_Bhw.size
      self.ema_usage[...] = self.usage_decay * self.ema_usage[...] + (1 - self.usage_decay) * freq_K
    zq_st = z + jax.lax.stop_gradient(zq - z)
    aux = {"quant_loss": codebook_loss + self.beta * commit_loss, "codebook_loss": codebook_loss,
           "commit_loss": commit_loss, "code_hist": hist_K, "z": z}
    return zq_st.astype(z_BhwD.dtype), idx_Bhw.reshape(idx_Bhw.shape[0], -1), aux

  def restart_dead_codes(self, z_BhwD: jax.Array, rng: jax.Array, threshold: float) -> jax.Array:
    """Replaces codes whose EMA frequency is below `threshold / K` by random encoder outputs; returns the count."""
    dead_K = self.ema_usage[...] < threshold / self.codebook_size
    pool_ND = z_BhwD.reshape(-1, self.code_dim).astype(jnp.float32)
    pick = jax.random.randint(rng, (self.codebook_size,), 0, pool_ND.shape[0])
    noise = 1e-3 * jax.random.normal(jax.random.fold_in(rng, 1), (self.codebook_size, self.code_dim))
    fresh_KD = (pool_ND[pick] + noise).astype(self.codebook[...].dtype)
    self.codebook[...] = jnp.where(dead_K[:, None], fresh_KD, self.codebook[...])
    # Just above the threshold: a restarted code that stays unused is restarted again soon.
    self.ema_usage[...] = jnp.where(dead_K, 2.0 * threshold / self.codebook_size, self.ema_usage[...])
    return jnp.sum(dead_K)
