"""Speculative decoding's acceptance rules, as pure functions of one step's draft and target distributions.

Discrete (Leviathan et al. 2211.17192, Chen et al. 2302.01318): a draft token x ~ q is kept with probability
min(1, p(x) / q(x)), else replaced by a draw from the residual norm(max(0, p - q)); the result is distributed as p
exactly, and the probability of keeping is 1 - TV(p, q). p and q are the distributions the sampler draws from
(guidance, temperature, top-k and top-p applied: `ar_gen.decoding.logits.filtered_log_probs`).

Continuous (CSpD, arXiv 2411.11925): a diffusion head's token is the last reverse step's Gaussian draw, so a draft
token x ~ q = N(mu_q, s_q^2) is judged against the target's last step p = N(mu_p, s_p^2) computed on the target's
own trajectory from the same noise (trajectory alignment): kept with probability min(1, Sigma p(x) / q(x)), else
replaced by a draw of the residual (Sigma p - q)+, found by `num_proposals` draws x' ~ p each accepted with
probability max(0, 1 - q(x') / (Sigma p(x'))) (no normaliser needed); when none is accepted the token is the
target's own aligned sample (`fallback`), and that is counted. `log_sigma` is the paper's trajectory factor,
sum over the earlier steps of log s_q,t - log s_p,t: with it 0 the step is an exact speculative step between the
two last-step Gaussians (lossless given the trajectories); with the paper's factor it is not (docs/speculative.md).
Everything is in log space.

Windows: `first_rejection` finds where a window of gamma drafted steps stops being accepted; the tokens after it
are dropped (truncation), the rejected one is the resampled token.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

LOG_2PI = math.log(2 * math.pi)
TINY = float(np.finfo(np.float32).tiny)  # uniforms in [TINY, 1): log u is finite


class Gaussian(NamedTuple):
  """Diagonal Gaussians [N, D]: a mean and a log standard deviation per dimension (broadcastable)."""

  mean: jax.Array
  log_std: jax.Array

  def log_density(self, x_ND: jax.Array) -> jax.Array:
    """log N(x; mean, std^2) summed over the last axis: [N]."""
    z = (x_ND - self.mean) * jnp.exp(-self.log_std)
    return jnp.sum(-0.5 * z * z - self.log_std - 0.5 * LOG_2PI, axis=-1)

  def sample(self, rng: jax.Array, shape: tuple[int, ...] | None = None) -> jax.Array:
    shape = shape or jnp.broadcast_shapes(self.mean.shape, self.log_std.shape)
    return self.mean + jnp.exp(self.log_std) * jax.random.normal(rng, shape)


def log1mexp(a: jax.Array) -> jax.Array:
  """log(1 - exp(a)) for a <= 0, accurate at both ends (-inf at a = 0)."""
  a = jnp.minimum(a, 0.0)
  return jnp.where(a > -0.693, jnp.log(-jnp.expm1(a)), jnp.log1p(-jnp.exp(a)))


# ------------------------------------------------------------------------------------------------ continuous
def gaussian_accept(rng: jax.Array, x_ND: jax.Array, p: Gaussian, q: Gaussian,
                    log_sigma_N: jax.Array | float = 0.0) -> jax.Array:
  """Whether each draft token x ~ q is kept: log u < log Sigma + log p(x) - log q(x). [N] bool."""
  log_ratio = log_sigma_N + p.log_density(x_ND) - q.log_density(x_ND)
  return jnp.log(jax.random.uniform(rng, log_ratio.shape, minval=TINY)) < jnp.minimum(log_ratio, 0.0)


def gaussian_residual(rng: jax.Array, p: Gaussian, q: Gaussian, num_proposals: int,
                      log_sigma_N: jax.Array | float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Draws of the residual (Sigma p - q)+ by `num_proposals` proposals from p each: (x [N, D], found [N]); the
  first accepted proposal of each row, or (the first proposal, False) where none is."""
  n, d = jnp.broadcast_shapes(p.mean.shape, p.log_std.shape)
  prop_key, u_key = jax.random.split(rng)
  x_KND = p.sample(prop_key, (num_proposals, n, d))
  log_q_over_p_KN = (jax.vmap(q.log_density)(x_KND) - jax.vmap(p.log_density)(x_KND)) - log_sigma_N
  log_keep_KN = log1mexp(jnp.minimum(log_q_over_p_KN, 0.0))  # log max(0, 1 - q / (Sigma p))
  keep_KN = jnp.log(jax.random.uniform(u_key, log_keep_KN.shape, minval=TINY)) < log_keep_KN
  first_N = jnp.argmax(keep_KN, axis=0)
  return x_KND[first_N, jnp.arange(n)], jnp.any(keep_KN, axis=0)


class StepResult(NamedTuple):
  """One speculative step's tokens and what happened: accepted (the draft kept), fell_back (rejected and no
  residual proposal accepted: the fallback token)."""

  tokens: jax.Array
  accepted: jax.Array
  fell_back: jax.Array


def gaussian_speculative(rng: jax.Array, x_ND: jax.Array, p: Gaussian, q: Gaussian, fallback_ND: jax.Array, *,
                         num_proposals: int = 16, log_sigma_N: jax.Array | float = 0.0) -> StepResult:
  """A continuous speculative step: the draft tokens x ~ q kept or replaced by a residual draw (else fallback)."""
  accept_key, residual_key = jax.random.split(rng)
  accepted_N = gaussian_accept(accept_key, x_ND, p, q, log_sigma_N)
  residual_ND, found_N = gaussian_residual(residual_key, p, q, num_proposals, log_sigma_N)
  replaced_ND = jnp.where(found_N[:, None], residual_ND, fallback_ND)
  return StepResult(jnp.where(accepted_N[:, None], x_ND, replaced_ND), accepted_N, ~accepted_N & ~found_N)


# ------------------------------------------------------------------------------------------------ discrete
def categorical_speculative(rng: jax.Array, tokens_N: jax.Array, log_p_NV: jax.Array,
                            log_q_NV: jax.Array) -> StepResult:
  """A discrete speculative step: draft tokens ~ q kept with min(1, p / q), else a draw of norm(max(0, p - q))
  (of p where p == q: never needed then, as the draft is always kept)."""
  accept_key, residual_key = jax.random.split(rng)
  rows = jnp.arange(tokens_N.shape[0])
  log_ratio_N = log_p_NV[rows, tokens_N] - log_q_NV[rows, tokens_N]
  accepted_N = jnp.log(jax.random.uniform(accept_key, log_ratio_N.shape, minval=TINY)) < jnp.minimum(log_ratio_N, 0)
  residual_NV = jnp.maximum(jnp.exp(log_p_NV) - jnp.exp(log_q_NV), 0.0)
  empty_N = jnp.sum(residual_NV, axis=-1) <= 0
  log_residual_NV = jnp.where(empty_N[:, None], log_p_NV, jnp.log(residual_NV))
  drawn_N = jax.random.categorical(residual_key, log_residual_NV, axis=-1).astype(tokens_N.dtype)
  return StepResult(jnp.where(accepted_N, tokens_N, drawn_N), accepted_N, jnp.zeros_like(accepted_N))


# ------------------------------------------------------------------------------------------------ windows
def first_rejection(accepted_BG: jax.Array) -> jax.Array:
  """The index of the first rejected step of each window [B] (G where every step is accepted)."""
  g = accepted_BG.shape[-1]
  return jnp.where(jnp.all(accepted_BG, axis=-1), g, jnp.argmin(accepted_BG, axis=-1)).astype(jnp.int32)
