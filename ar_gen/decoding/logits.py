"""Logits processors, pure functions on [B, V] logits: temperature, top-k, top-p, classifier-free guidance."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

NEG_INF = -1e30
CFG_SCHEDULES = ("constant", "linear")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to turn logits into tokens. temperature 0 means greedy (argmax).

  cfg_scale: guided = uncond + scale * (cond - uncond); 1 disables guidance. cfg_schedule 'linear' ramps the scale
  from 1 at the first step to cfg_scale at the last. cfg_interval (lo, hi): guidance only on steps whose fraction
  of the way through the sequence, step / num_steps, lies in [lo, hi); lo = hi guides no step, lo > hi is refused.
  """

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  cfg_scale: float = 1.0
  cfg_schedule: str = "constant"
  cfg_interval: tuple[float, float] = (0.0, 1.0)

  def __post_init__(self):
    if self.cfg_schedule not in CFG_SCHEDULES:
      raise ValueError(f"cfg_schedule must be one of {CFG_SCHEDULES}, got {self.cfg_schedule!r}")
    if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
      raise ValueError(f"need temperature >= 0, top_k >= 0, 0 < top_p <= 1; got {self}")
    if self.cfg_scale < 0:
      raise ValueError(f"cfg_scale must be >= 0 (1 = no guidance), got {self.cfg_scale}")
    interval = tuple(self.cfg_interval)
    if len(interval) != 2 or not 0 <= interval[0] <= interval[1] <= 1:
      raise ValueError(f"cfg_interval must be LO,HI with 0 <= LO <= HI <= 1 (the fraction of the steps that are "
                       f"guided; LO = HI guides none), got {','.join(map(str, interval))}")

  @property
  def guided(self) -> bool:
    return self.cfg_scale != 1.0

  @classmethod
  def from_config(cls, section, **overrides) -> "SamplingConfig":
    """The `sample` section of a config as a SamplingConfig; overrides that are not None win (CLI flags)."""
    values = dict(temperature=section.temperature, top_k=section.top_k, top_p=section.top_p,
                  cfg_scale=section.cfg_scale, cfg_schedule=section.cfg_schedule,
                  cfg_interval=tuple(section.cfg_interval))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def top_k_filter(logits_BV: jax.Array, k: int) -> jax.Array:
  if k <= 0 or k >= logits_BV.shape[-1]:
    return logits_BV
  threshold = jax.lax.top_k(logits_BV, k)[0][..., -1:]
  return jnp.where(logits_BV < threshold, NEG_INF, logits_BV)


def _top_p_keep(sorted_logits_BN: jax.Array, p: float) -> jax.Array:
  """Which of logits sorted in descending order the top-p rule keeps (the smallest prefix whose probability
  reaches p; at least one)."""
  probs = jax.nn.softmax(sorted_logits_BN, axis=-1)
  before = jnp.cumsum(probs, axis=-1) - probs  # probability mass strictly before each token
  return before < p


def top_p_filter(logits_BV: jax.Array, p: float) -> jax.Array:
  """Keeps the smallest set of most likely tokens whose probability reaches p (at least one token)."""
  if p >= 1.0:
    return logits_BV
  order = jnp.argsort(-logits_BV, axis=-1)
  sorted_keep = _top_p_keep(jnp.take_along_axis(logits_BV, order, axis=-1), p)
  keep = jnp.zeros_like(sorted_keep).at[jnp.arange(logits_BV.shape[0])[:, None], order].set(sorted_keep)
  return jnp.where(keep, logits_BV, NEG_INF)


TIE_WINDOW = 256  # candidates past the k-th kept for ties with it (bf16 logits tie often)


def _sample_top_k(logits_BV: jax.Array, rng: jax.Array, k: int, p: float) -> jax.Array:
  """`categorical(rng, top_p_filter(top_k_filter(logits, k), p))` computed on the candidates only: the k + 256
  largest logits with those below the k-th masked (ties with it kept, as `top_k_filter`, LlamaGen and VAR keep
  them), top-p on those sorted values instead of a sort of the whole vocabulary, and the same Gumbel noise
  `jax.random.categorical` draws (shape [B, V]) read at the candidates, so the token is the same one. Where even
  the last candidate ties the k-th logit, the whole-vocabulary path runs instead (`lax.cond`)."""
  wide = min(logits_BV.shape[-1], k + TIE_WINDOW)
  # the barrier keeps XLA from duplicating the top-k into each of its consumers (measured 3x slower without)
  values_Bw, ids_Bw = jax.lax.optimization_barrier(jax.lax.top_k(logits_BV, wide))
  threshold_B1 = values_Bw[:, k - 1:k]
  gumbel_BV = jax.random.gumbel(rng, logits_BV.shape, logits_BV.dtype)

  def on_candidates(gumbel_BV):
    values_Bw_kept = jnp.where(values_Bw < threshold_B1, NEG_INF, values_Bw)
    if p < 1.0:
      values_Bw_kept = jnp.where(_top_p_keep(values_Bw_kept, p), values_Bw_kept, NEG_INF)
    pick_B = jnp.argmax(values_Bw_kept + jnp.take_along_axis(gumbel_BV, ids_Bw, axis=-1), axis=-1)
    return jnp.take_along_axis(ids_Bw, pick_B[:, None], axis=-1)[:, 0].astype(jnp.int32)

  def on_vocabulary(gumbel_BV):
    return jnp.argmax(top_p_filter(top_k_filter(logits_BV, k), p) + gumbel_BV, axis=-1).astype(jnp.int32)

  if wide == logits_BV.shape[-1]:
    return on_candidates(gumbel_BV)
  ties_past_the_window = jnp.any(values_Bw[:, -1:] >= threshold_B1)
  return jax.lax.cond(ties_past_the_window, on_vocabulary, on_candidates, gumbel_BV)


def guidance_scale(cfg: SamplingConfig, step: jax.Array, num_steps: int,
                   progress: jax.Array | None = None) -> jax.Array:
  """The CFG scale at `step` of `num_steps` (1 where guidance is off); 'linear' ramps with `progress`, the fraction
  of the way (default step / (num_steps - 1); MAR's: the fraction of tokens revealed)."""
  frac = step / num_steps
  scale = cfg.cfg_scale
  if cfg.cfg_schedule == "linear":
    progress = step / max(num_steps - 1, 1) if progress is None else progress
    scale = 1.0 + (cfg.cfg_scale - 1.0) * progress
  inside = (frac >= cfg.cfg_interval[0]) & (frac < cfg.cfg_interval[1])
  return jnp.where(inside, scale, 1.0)


def combine_guidance(cond_BV: jax.Array, uncond_BV: jax.Array, scale: jax.Array) -> jax.Array:
  return uncond_BV + scale * (cond_BV - uncond_BV)


def sample_logits(logits_BV: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """Token ids [B] from logits after temperature, top-k and top-p."""
  if cfg.temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV / cfg.temperature
  if 0 < cfg.top_k < logits_BV.shape[-1]:
    return _sample_top_k(logits_BV, rng, cfg.top_k, cfg.top_p)
  return jax.random.categorical(rng, top_p_filter(logits_BV, cfg.top_p), axis=-1).astype(jnp.int32)


def filtered_log_probs(logits_BV: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """The log-probabilities `sample_logits` draws from: temperature, top-k, top-p applied (temperature 0: all the
  mass on the argmax). What speculative decoding compares."""
  if cfg.temperature == 0:
    top_BV = jax.nn.one_hot(jnp.argmax(logits_BV, axis=-1), logits_BV.shape[-1], dtype=bool)
    return jnp.where(top_BV, 0.0, -jnp.inf)
  filtered_BV = top_p_filter(top_k_filter(logits_BV / cfg.temperature, cfg.top_k), cfg.top_p)
  return jax.nn.log_softmax(jnp.where(filtered_BV <= NEG_INF, -jnp.inf, filtered_BV), axis=-1)
