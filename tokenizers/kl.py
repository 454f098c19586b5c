"""The KL bottleneck of a continuous tokenizer (LDM's AutoencoderKL, MAR's KL-16): a diagonal Gaussian posterior.

It stands where a quantizer stands in `tokenizers.model.Tokenizer` and takes the same call. Its input is the
projected encoder output [B, h, w, 2 D] (LDM's "moments": mean then log-variance along channels, the log-variance
clamped to [-30, 20]); training passes the reparameterised sample mean + std * eps to the decoder, evaluation the
mean. The tokens are vectors (`TokenLayout.raster(kind="vectors")`): the posterior mean of each latent position
times the latent scale factor (LDM and MAR multiply by 0.2325 so that latents have about unit variance, and divide
before decoding; `embed` divides).

The scale factor is measured on data while the tokenizer trains, or set: with `scale_factor: 0` (the default of
ar-gen's own training configs) the bottleneck keeps running moments of the posterior means it sees (a non-trainable
`LatentStats` updated after every step, decay `stats_decay`) and the scale is 1 / their standard deviation; a
positive `scale_factor` (0.2325 for the converted kl16) is used as it is. `ar-gen eval-tokenizer` reports the
tokens' standard deviation.

The KL term is LDM's 0.5 * sum(mean^2 + var - 1 - log var) over the latent, averaged over the batch, and the
quantizer loss is `kl_weight` times it. LDM weighs it against a reconstruction loss summed over pixels; ar-gen's
reconstruction loss is a per-pixel mean, so LDM's kl_weight w corresponds to w / (H * W * C) here (1e-6 at 256 px:
5.1e-12, a latent regularised hardly at all; kl16's latents have a standard deviation of about 1 / 0.2325).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen.layout import TokenLayout

LOGVAR_RANGE = (-30.0, 20.0)  # LDM's DiagonalGaussianDistribution clamp


def default_config() -> ml_collections.ConfigDict:
  """`model.kl`: latent width D, KL weight (per-pixel-mean convention, see the module docstring), the latent scale
  factor (0 = measured on the training data), the decay of the running latent moments."""
  return ml_collections.ConfigDict(dict(embed_dim=16, kl_weight=1e-4, scale_factor=0.0, stats_decay=0.99))


def from_config(c: ml_collections.ConfigDict, grid: tuple[int, int], rngs: nnx.Rngs,
                param_dtype=jnp.float32) -> "KLBottleneck":
  del rngs, param_dtype
  return KLBottleneck(c.embed_dim, grid, kl_weight=c.kl_weight, scale_factor=c.scale_factor,
                      stats_decay=c.stats_decay)


class LatentStats(nnx.Variable):
  """Running first and second moments of the posterior means (not trained)."""


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, 1)) summed over all but the batch axis, float32 [B]."""
  mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
  kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
  return jnp.sum(kl.reshape(kl.shape[0], -1), axis=-1)


class KLBottleneck(nnx.Module):
  """Moments [B, h, w, 2 D] -> (latent, tokens [B, L, D], aux) with the quantizer call of `tokenizers.protocol`."""

  codebook_size = 0

  def __init__(self, embed_dim: int, grid: tuple[int, int], *, kl_weight: float = 1e-4, scale_factor: float = 0.0,
               stats_decay: float = 0.99):
    if scale_factor < 0:
      raise ValueError(f"model.kl.scale_factor must be > 0, or 0 to measure it on the data; got {scale_factor}")
    self.embed_dim, self.grid, self.kl_weight = embed_dim, tuple(grid), kl_weight
    self.fixed_scale, self.stats_decay = float(scale_factor), stats_decay
    self.input_dim = 2 * embed_dim  # the projection before the bottleneck gives mean and log-variance
    self.code_dim = embed_dim  # the projection after it reads a latent of D channels
    self.stats = LatentStats(jnp.asarray([0.0, 1.0], jnp.float32))  # E[mean], E[mean^2]

  @property
  def layout(self) -> TokenLayout:
    return TokenLayout.raster(self.grid, kind="vectors", token_dim=self.embed_dim)

  def scale(self) -> jax.Array:
    """The latent scale factor: the fixed one, or 1 / the running standard deviation of the posterior means."""
    if self.fixed_scale > 0:
      return jnp.float32(self.fixed_scale)
    first, second = self.stats[...][0], self.stats[...][1]
    return jax.lax.rsqrt(jnp.maximum(second - first * first, 1e-12))

  def moments(self, moments_BhwE: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, clamped log-variance), each [B, h, w, D]."""
    mean, logvar = jnp.split(moments_BhwE.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def __call__(self, moments_BhwE: jax.Array, train: bool = False,
               rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array, dict]:
    mean, logvar = self.moments(moments_BhwE)
    latent = mean
    if train:
      if rng is None:
        raise ValueError("the KL bottleneck samples its posterior in training: pass rng")
      latent = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, jnp.float32)
    kl = jnp.mean(kl_divergence(mean, logvar))
    aux = {"quant_loss": self.kl_weight * kl, "kl_loss": kl, "z": mean,
           "posterior_std": jnp.mean(jnp.exp(0.5 * logvar))}
    return latent.astype(moments_BhwE.dtype), self.tokens_of(mean), aux

  def tokens_of(self, mean_BhwD: jax.Array) -> jax.Array:
    b, h, w, d = mean_BhwD.shape
    return (mean_BhwD * self.scale()).reshape(b, h * w, d)

  def indices(self, moments_BhwE: jax.Array) -> jax.Array:
    """Tokens [B, L, D]: the scaled posterior means."""
    return self.tokens_of(self.moments(moments_BhwE)[0])

  def embed(self, tokens_BLD: jax.Array, num_maps: int | None = None) -> jax.Array:
    """The decoder's latent [B, h, w, D] from tokens (the scale divided out)."""
    del num_maps
    b = tokens_BLD.shape[0]
    return (tokens_BLD.astype(jnp.float32) / self.scale()).reshape(b, *self.grid, self.embed_dim)

  def update_stats(self, mean_BhwD: jax.Array, active: jax.Array | bool = True) -> None:
    """Moves the running moments towards this batch's (no-op with a fixed scale, or where `active` is False)."""
    if self.fixed_scale > 0:
      return
    x = mean_BhwD.astype(jnp.float32)
    batch = jnp.stack([jnp.mean(x), jnp.mean(x * x)])
    new = self.stats_decay * self.stats[...] + (1 - self.stats_decay) * batch
    self.stats[...] = jnp.where(active, new, self.stats[...])

  def restart_dead_codes(self, z_BhwD: jax.Array, rng: jax.Array, threshold: float) -> jax.Array:
    del z_BhwD, rng, threshold
    return jnp.zeros((), jnp.int32)
