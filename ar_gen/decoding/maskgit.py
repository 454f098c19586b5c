"""MaskGIT's parallel decoding (Chang et al. 2022): every token starts masked, and each of T steps predicts all
masked positions at once and keeps the most confident, so that the count still masked follows the cosine schedule.

`mask_counts(n, steps)`: after step t of T, floor(n * cos(pi / 2 * t / T)) tokens are still masked (0 after the
last), each step revealing at least one. `sample(logits_fn, ...)`: at each step the masked positions draw a token
from their logits (temperature / top-k: `ar_gen.decoding.logits`), their confidence is the log-probability of the
drawn token plus `choice_temperature * (1 - t / T)` Gumbel noise (MaskGIT's annealed randomness in the choice), the
positions decided earlier keep their tokens, and the least confident drawn positions are masked again.
`mask_ratio(u)` = cos(pi / 2 * u) is the same schedule for training (u uniform in [0, 1)). Generic: `logits_fn`
is any function of the tokens [B, N] (mask id where masked) to logits [B, N, V]; this package knows no model.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ar_gen.decoding.logits import SamplingConfig, filtered_log_probs, sample_logits


def mask_counts(n: int, steps: int) -> np.ndarray:
  """[steps + 1] tokens still masked before step 1 (n) and after each step t (cosine law, strictly decreasing)."""
  if steps < 1 or n < steps:
    raise ValueError(f"MaskGIT decoding needs 1 <= steps <= tokens, got {steps} steps for {n} tokens")
  counts = [n]
  for t in range(1, steps + 1):
    law = math.floor(n * math.cos(math.pi / 2 * t / steps) + 1e-9)
    counts.append(0 if t == steps else max(0, min(law, counts[-1] - 1, n - t)))
  return np.asarray(counts, np.int32)


def mask_ratio(u: jax.Array) -> jax.Array:
  """The cosine schedule's share of masked tokens at uniform u in [0, 1)."""
  return jnp.cos(jnp.pi / 2 * u)


def training_mask(rng: jax.Array, batch: int, n: int) -> jax.Array:
  """[B, N] bool: the positions masked for a training example, ceil(n * cos(pi / 2 * u)) of them (at least 1)."""
  k_ratio, k_order = jax.random.split(rng)
  num_B = jnp.clip(jnp.ceil(mask_ratio(jax.random.uniform(k_ratio, (batch,))) * n), 1, n)
  ranks_BN = jnp.argsort(jnp.argsort(jax.random.uniform(k_order, (batch, n)), axis=-1), axis=-1)
  return ranks_BN < num_B[:, None]


def sample(logits_fn, batch: int, n: int, mask_id: int, steps: int, rng: jax.Array, cfg: SamplingConfig,
           choice_temperature: float = 4.5, trace: bool = False):
  """Tokens [B, N] by MaskGIT decoding (trace under jit); with `trace`, also the count still masked after each step
  [T, B] (what the schedule test reads)."""
  counts = mask_counts(n, steps)
  tokens_BN = jnp.full((batch, n), mask_id, jnp.int32)
  masked_counts = []
  for t in range(1, steps + 1):
    key = jax.random.fold_in(rng, t)
    masked_BN = tokens_BN == mask_id
    logits_BNV = logits_fn(tokens_BN).astype(jnp.float32)
    v = logits_BNV.shape[-1]
    drawn_BN = sample_logits(logits_BNV.reshape(-1, v), jax.random.fold_in(key, 0), cfg).reshape(batch, n)
    logp_BNV = filtered_log_probs(logits_BNV.reshape(-1, v), cfg).reshape(batch, n, v)
    confidence_BN = jnp.take_along_axis(logp_BNV, drawn_BN[..., None], axis=-1)[..., 0]
    noise = choice_temperature * (1 - t / steps)
    confidence_BN = confidence_BN + noise * jax.random.gumbel(jax.random.fold_in(key, 1), (batch, n))
    confidence_BN = jnp.where(masked_BN, confidence_BN, jnp.inf)  # decided tokens are kept
    ranks_BN = jnp.argsort(jnp.argsort(confidence_BN, axis=-1), axis=-1)  # 0: the least confident
    remask_BN = ranks_BN < int(counts[t])
    tokens_BN = jnp.where(masked_BN, jnp.where(remask_BN, mask_id, drawn_BN), tokens_BN)
    masked_counts.append(jnp.sum(tokens_BN == mask_id, axis=-1))
  return (tokens_BN, jnp.stack(masked_counts)) if trace else tokens_BN
