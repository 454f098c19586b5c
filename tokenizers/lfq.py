"""Lookup-free quantization (MAGVIT-v2 / Open-MAGVIT2): sign quantisation to {-1, +1}^d, index from the bits.

Losses: commitment (z to sg(sign z)) and the entropy loss
    mean_n H(p(c | z_n)) - gamma * H(mean_n p(c | z_n)),     p(c | z) = softmax_c(-||z - c||^2 / tau).
The code distribution factorises over bits, p(c | z) = prod_k p(c_k | z_k) with p(+1 | z_k) = sigmoid(4 z_k / tau),
so the per-sample entropy is a sum over bits. The batch-mean distribution does not factorise; it is computed
exactly, without an N x 2^d matrix, from two halves of the bits: P_A [N, 2^a] and P_B [N, 2^b] (a + b = d) give
mean_n p = P_A^T P_B / N, a [2^a, 2^b] matrix (2^18 entries for d = 18).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ar_gen.layout import TokenLayout
from tokenizers.vq import code_histogram


def default_config() -> ml_collections.ConfigDict:
  """`model.lfq`: bits per token (codebook 2^bits), commitment weight beta, entropy-loss weight, diversity gamma
  and temperature."""
  return ml_collections.ConfigDict(dict(num_bits=18, beta=0.25, entropy_weight=0.1, diversity_gamma=1.0,
                                        entropy_temperature=0.01))


def from_config(c: ml_collections.ConfigDict, grid: tuple[int, int], rngs: nnx.Rngs,
                param_dtype=jnp.float32) -> "LookupFreeQuantizer":
  del rngs, param_dtype  # no parameters
  return LookupFreeQuantizer(c.num_bits, grid, commit_weight=c.beta, entropy_weight=c.entropy_weight,
                             diversity_gamma=c.diversity_gamma, temperature=c.entropy_temperature)


def bits_table(num_bits: int) -> np.ndarray:
  """All codes of `num_bits` bits as {0, 1} [2^num_bits, num_bits]; bit k has weight 2^k."""
  return ((np.arange(2 ** num_bits)[:, None] >> np.arange(num_bits)[None, :]) & 1).astype(np.float32)


def _entropy(p: jax.Array, axis=None) -> jax.Array:
  return -jnp.sum(p * jnp.log(jnp.maximum(p, 1e-30)), axis=axis)


def _half_log_probs(logp_plus_Nk: jax.Array, logp_minus_Nk: jax.Array) -> jax.Array:
  table = jnp.asarray(bits_table(logp_plus_Nk.shape[-1]))
  return logp_plus_Nk @ table.T + logp_minus_Nk @ (1.0 - table).T


def entropy_terms(z_ND: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """(mean per-sample entropy, entropy of the batch-mean code distribution), exact, in nats."""
  logits_ND = 4.0 * z_ND.astype(jnp.float32) / temperature
  logp_plus, logp_minus = jax.nn.log_sigmoid(logits_ND), jax.nn.log_sigmoid(-logits_ND)
  p_plus = jnp.exp(logp_plus)
  per_sample = jnp.mean(jnp.sum(_entropy(jnp.stack([p_plus, 1 - p_plus]), axis=0), axis=-1))
  a = z_ND.shape[-1] // 2
  pa_NA = jnp.exp(_half_log_probs(logp_plus[:, :a], logp_minus[:, :a]))
  pb_NB = jnp.exp(_half_log_probs(logp_plus[:, a:], logp_minus[:, a:]))
  mean_AB = pa_NA.T @ pb_NB / z_ND.shape[0]
  return per_sample, _entropy(mean_AB)


def entropy_terms_bruteforce(z_ND: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """The same terms from the full N x 2^d softmax (for tests; small d only)."""
  codes_KD = 2.0 * jnp.asarray(bits_table(z_ND.shape[-1])) - 1.0
  dist_NK = jnp.sum(jnp.square(z_ND[:, None, :] - codes_KD[None]), axis=-1)
  p_NK = jax.nn.softmax(-dist_NK / temperature, axis=-1)
  return jnp.mean(_entropy(p_NK, axis=-1)), _entropy(jnp.mean(p_NK, axis=0))


class LookupFreeQuantizer(nnx.Module):
  """Sign quantizer over d bits; codebook size 2^d."""

  def __init__(self, num_bits: int, grid: tuple[int, int] = (1, 1), *, commit_weight: float = 0.25,
               entropy_weight: float = 0.1, diversity_gamma: float = 1.0, temperature: float = 1.0):
    self.num_bits, self.code_dim, self.codebook_size, self.grid = num_bits, num_bits, 2 ** num_bits, tuple(grid)
    self.commit_weight, self.entropy_weight = commit_weight, entropy_weight
    self.diversity_gamma, self.temperature = diversity_gamma, temperature

  @property
  def layout(self) -> TokenLayout:
    """One map, the latent's grid, in raster order."""
    return TokenLayout.raster(self.grid, self.codebook_size)

  def indices(self, z_BhwD: jax.Array) -> jax.Array:
    """Token ids [B, L] in raster order: bit k is set where z_k > 0."""
    weights = jnp.asarray(2 ** np.arange(self.num_bits), jnp.int32)
    return jnp.sum((z_BhwD > 0).astype(jnp.int32) * weights, axis=-1).reshape(z_BhwD.shape[0], -1)

  def embed(self, tokens_BL: jax.Array, num_maps: int | None = None) -> jax.Array:
    """{-1, +1} code vectors [B, h, w, d] for token ids [B, L] (one map: `num_maps` is ignored)."""
    del num_maps
    bits = (self.layout.split(tokens_BL)[0][..., None] >> jnp.arange(self.num_bits)) & 1
    return 2.0 * bits.astype(jnp.float32) - 1.0

  def restart_dead_codes(self, z_BhwD: jax.Array, rng: jax.Array, threshold: float) -> jax.Array:
    """LFQ has no codebook to restart: returns 0."""
    del z_BhwD, rng, threshold
    return jnp.zeros((), jnp.int32)

  def __call__(self, z_BhwD: jax.Array, train: bool = False,
               rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array, dict]:
    """Returns (straight-through quantized z, token ids [B, L], aux with losses and the code histogram)."""
    del train, rng
    z = z_BhwD.astype(jnp.float32)
    q = jnp.where(z > 0, 1.0, -1.0)
    tokens_BL = self.indices(z)
    commit_loss = jnp.mean(jnp.square(z - jax.lax.stop_gradient(q)))
    per_sample, batch = entropy_terms(z.reshape(-1, self.num_bits), self.temperature)
    entropy_loss = per_sample - self.diversity_gamma * batch
    aux = {"quant_loss": self.commit_weight * commit_loss + self.entropy_weight * entropy_loss,
           "commit_loss": commit_loss, "entropy_loss": entropy_loss, "sample_entropy": per_sample,
           "batch_entropy": batch, "code_hist": code_histogram(tokens_BL, self.codebook_size), "z": z}
    return (z + jax.lax.stop_gradient(q - z)).astype(z_BhwD.dtype), tokens_BL, aux
