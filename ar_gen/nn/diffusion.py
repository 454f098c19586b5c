"""Gaussian diffusion of one token vector (MAR's per-token head, after ADM / DiT's `gaussian_diffusion.py`).

`GaussianDiffusion.cosine(T)` is ADM's cosine schedule (alpha_bar(t) = cos^2((t + 0.008) / 1.008 * pi / 2), betas
capped at 0.999); `.respaced("100")` keeps ADM's evenly strided subset of its timesteps (`space_timesteps`) and
recomputes the betas from the kept alpha_bars, with `timestep_map` the original index the network is called with.
The constants are computed in float64 and gathered as float32, as ADM's numpy tables are.

The network predicts epsilon and a learned-range variance (ADM's LEARNED_RANGE: `v` in [-1, 1] interpolates the
log-variance between the clipped posterior variance and beta_t). The training loss of a timestep is ADM's
MSE(eps) + the variational bound term in bits with the mean frozen (`training_loss`; decoder NLL at t = 0).
`p_sample` is one reverse step, the noise scaled by `temperature` (MAR's sampling temperature), none at t = 0;
`sample_loop` runs them all, each step's noise drawn from fold_in(rng, step).

A caveat MAR's code does not state: the cosine schedule's last beta is 0.999 (and a respaced last step's is nearer
1), so the first reverse step multiplies the network's error in eps by 1 / sqrt(alpha_T) (31 at 1000 steps, 690
at 100 respaced steps). A well-trained head is accurate enough there; a briefly trained one is not, and its samples
diverge. `clip_x0` (off by default, as in MAR) bounds the predicted x_0, which removes that amplification.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MAX_BETA = 0.999

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_t [N, D], timestep [N]) -> [N, 2 D]: eps, variance


def cosine_betas(num_steps: int) -> np.ndarray:
  """ADM's cosine schedule of `num_steps` betas (float64)."""
  alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
  return np.array([min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), MAX_BETA)
                   for i in range(num_steps)], np.float64)


def space_timesteps(num_steps: int, section_counts: str | int) -> list[int]:
  """ADM's `space_timesteps`: the kept timesteps when `num_steps` are cut into sections of the given counts
  ("100", or "10,15,20": that many evenly strided steps in each equal section), sorted."""
  counts = [int(x) for x in str(section_counts).split(",")]
  size_per, extra = divmod(num_steps, len(counts))
  start, kept = 0, []
  for i, count in enumerate(counts):
    size = size_per + (1 if i < extra else 0)
    if not 1 <= count <= size:
      raise ValueError(f"cannot take {count} diffusion steps from a section of {size} (of {num_steps} steps)")
    stride = 1 if count <= 1 else (size - 1) / (count - 1)
    kept += [start + round(stride * j) for j in range(count)]
    start += size
  return sorted(set(kept))


def _gather(table: np.ndarray, t: jax.Array, ndim: int) -> jax.Array:
  values = jnp.asarray(table.astype(np.float32))[t]
  return values.reshape(values.shape + (1,) * (ndim - 1))


def normal_kl(mean1, logvar1, mean2, logvar2):
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2) + jnp.square(mean1 - mean2) * jnp.exp(-logvar2))


def _approx_standard_normal_cdf(x):
  return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, mean, log_scale):
  """ADM's log-likelihood of `x` in [-1, 1] under a Gaussian discretised to 256 bins."""
  centered = x - mean
  inv_std = jnp.exp(-log_scale)
  cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
  cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_delta = jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))
  return jnp.where(x < -0.999, log_cdf_plus, jnp.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: jax.Array) -> jax.Array:
  return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


def _reverse_draw(out: dict[str, jax.Array], noise: jax.Array, temperature: float | jax.Array) -> jax.Array:
  """x_{t-1} from a reverse step's mean and log-variance: the mean plus the std times `noise` * `temperature`."""
  return out["mean"] + jnp.exp(0.5 * out["log_variance"]) * noise * temperature


class LastStep(NamedTuple):
  """The last reverse step p(x_0 | x_1) of one trajectory: mean [N, D], log std [N, D] (before the temperature),
  and the sum over the earlier steps and dimensions of their log stds [N] (CSpD's trajectory factor)."""

  mean: jax.Array
  log_std: jax.Array
  path_log_std: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianDiffusion:
  """A beta schedule with ADM's derived tables; `timestep_map[i]` is the network's timestep of index i."""

  betas: np.ndarray
  timestep_map: np.ndarray

  def __post_init__(self):
    b = np.asarray(self.betas, np.float64)
    acp = np.cumprod(1.0 - b)
    acp_prev = np.append(1.0, acp[:-1])
    post_var = b * (1.0 - acp_prev) / (1.0 - acp)
    tables = dict(
        alphas_cumprod=acp, alphas_cumprod_prev=acp_prev, sqrt_alphas_cumprod=np.sqrt(acp),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - acp), sqrt_recip_alphas_cumprod=np.sqrt(1.0 / acp),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / acp - 1), posterior_variance=post_var,
        posterior_log_variance_clipped=np.log(np.append(post_var[1], post_var[1:])) if len(b) > 1 else
        np.log(np.maximum(post_var, 1e-20)),
        posterior_mean_coef1=b * np.sqrt(acp_prev) / (1.0 - acp),
        posterior_mean_coef2=(1.0 - acp_prev) * np.sqrt(1.0 - b) / (1.0 - acp), log_betas=np.log(b))
    for name, value in tables.items():
      object.__setattr__(self, name, value)

  @classmethod
  def cosine(cls, num_steps: int = 1000) -> "GaussianDiffusion":
    return cls(cosine_betas(num_steps), np.arange(num_steps))

  def respaced(self, section_counts: str | int) -> "GaussianDiffusion":
    """The schedule over ADM's kept timesteps (`space_timesteps`), betas recomputed from their alpha_bars."""
    kept = space_timesteps(len(self.betas), section_counts)
    acp = self.alphas_cumprod[kept]
    betas = 1.0 - acp / np.append(1.0, acp[:-1])
    return GaussianDiffusion(betas, np.asarray(self.timestep_map)[kept])

  @property
  def num_steps(self) -> int:
    return len(self.betas)

  def model_timesteps(self, t: jax.Array) -> jax.Array:
    """The network's timestep of schedule index `t` (the original, un-respaced index)."""
    return jnp.asarray(self.timestep_map, jnp.int32)[t]

  # ------------------------------------------------------------------ forward process
  def q_sample(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    return (_gather(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
            + _gather(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise)

  def q_posterior(self, x0: jax.Array, x_t: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, clipped log-variance) of q(x_{t-1} | x_t, x_0)."""
    mean = _gather(self.posterior_mean_coef1, t, x0.ndim) * x0 + _gather(self.posterior_mean_coef2, t, x0.ndim) * x_t
    return mean, _gather(self.posterior_log_variance_clipped, t, x0.ndim)

  # ------------------------------------------------------------------ reverse process
  def p_mean_variance(self, model_output: jax.Array, x_t: jax.Array, t: jax.Array,
                      clip_x0: float = 0.0) -> dict[str, jax.Array]:
    """Mean, log-variance and predicted x_0 of p(x_{t-1} | x_t) from the network's [eps, v] (LEARNED_RANGE);
    `clip_x0` > 0 clips the predicted x_0 to [-clip_x0, clip_x0] (ADM's clip_denoised at 1; MAR clips nothing)."""
    eps, v = jnp.split(model_output, 2, axis=-1)
    min_log = _gather(self.posterior_log_variance_clipped, t, x_t.ndim)
    max_log = _gather(self.log_betas, t, x_t.ndim)
    frac = (v + 1) / 2
    log_variance = frac * max_log + (1 - frac) * min_log
    pred_x0 = _gather(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - _gather(
        self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps
    if clip_x0 > 0:
      pred_x0 = jnp.clip(pred_x0, -clip_x0, clip_x0)
    mean, _ = self.q_posterior(pred_x0, x_t, t)
    return {"mean": mean, "log_variance": log_variance, "pred_x0": pred_x0}

  def p_sample(self, model_output: jax.Array, x_t: jax.Array, t: jax.Array, noise: jax.Array,
               temperature: float | jax.Array = 1.0, clip_x0: float = 0.0) -> jax.Array:
    """x_{t-1}: the mean plus the scaled standard deviation times `noise` * `temperature`; no noise at t = 0."""
    out = self.p_mean_variance(model_output, x_t, t, clip_x0)
    nonzero = (t != 0).astype(x_t.dtype).reshape(t.shape + (1,) * (x_t.ndim - 1))
    return _reverse_draw(out, noise * nonzero, temperature)

  def sample_loop(self, model_fn: ModelFn, noise: jax.Array, rng: jax.Array,
                  temperature: float | jax.Array = 1.0, clip_x0: float = 0.0) -> jax.Array:
    """x_0 from x_T = `noise` [N, D] through every step of the schedule; step i's noise from fold_in(rng, i)."""
    return self.last_step(model_fn, noise, rng, temperature, clip_x0).mean

  def last_step(self, model_fn: ModelFn, noise: jax.Array, rng: jax.Array,
                temperature: float | jax.Array = 1.0, clip_x0: float = 0.0) -> "LastStep":
    """The reverse process from x_T = `noise` [N, D] down to x_1 (step i's noise from fold_in(rng, i)), and the
    Gaussian of its last step p(x_0 | x_1): its mean is `sample_loop`'s x_0. Speculative decoding judges tokens on
    it (`ar_gen.decoding.speculative`)."""
    n = noise.shape[0]

    def body(j, carry):
      x, path_log_std_N = carry
      i = self.num_steps - 1 - j
      t = jnp.full((n,), i, jnp.int32)
      out = self.p_mean_variance(model_fn(x, self.model_timesteps(t)), x, t, clip_x0)
      noise_i = jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
      x = _reverse_draw(out, noise_i, temperature)
      return x, path_log_std_N + 0.5 * jnp.sum(out["log_variance"], axis=-1)

    x1, path_log_std_N = jax.lax.fori_loop(0, self.num_steps - 1, body, (noise, jnp.zeros((n,), noise.dtype)))
    t0 = jnp.zeros((n,), jnp.int32)
    out = self.p_mean_variance(model_fn(x1, self.model_timesteps(t0)), x1, t0, clip_x0)
    return LastStep(out["mean"], 0.5 * out["log_variance"], path_log_std_N)

  # ------------------------------------------------------------------ training
  def training_loss(self, model_fn: ModelFn, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """ADM's loss per example [N]: MSE of eps + the VLB term (bits per dim) with the predicted mean frozen."""
    x_t = self.q_sample(x0, t, noise)
    out = model_fn(x_t, self.model_timesteps(t))
    eps, v = jnp.split(out, 2, axis=-1)
    mse = _mean_flat(jnp.square(noise - eps))
    frozen = self.p_mean_variance(jnp.concatenate([jax.lax.stop_gradient(eps), v], -1), x_t, t)
    true_mean, true_log_variance = self.q_posterior(x0, x_t, t)
    kl = _mean_flat(normal_kl(true_mean, true_log_variance, frozen["mean"], frozen["log_variance"])) / math.log(2.0)
    nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, frozen["mean"], 0.5 * frozen["log_variance"]))
    return mse + jnp.where(t == 0, nll / math.log(2.0), kl)
