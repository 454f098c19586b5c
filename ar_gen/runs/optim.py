"""Optimizer from config: AdamW with a warmup / hold / decay learning-rate schedule, gradient clipping, weight EMA.

`config.optimizer`: lr, warmup_steps, schedule (`cosine` or `linear` decay), hold_fraction, end_lr_factor, b1, b2,
weight_decay (matrices and kernels only), grad_clip (global norm, 0 = off). `config.ema_decay` (0 = no EMA).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


SCHEDULES = ("cosine", "linear")


def schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps`; `lr` held for `hold_fraction` of the steps after warmup; then
  a cosine or linear (`schedule`) decay to `lr * end_lr_factor` at `total_steps`.

  VAR's `lin0` is `linear` with hold_fraction 0.05; `end_lr_factor=1` is a constant rate after warmup (LlamaGen).
  Work directories written before `schedule` / `hold_fraction` existed read as cosine without a hold.
  """
  kind, hold_fraction = opt.get("schedule", "cosine"), opt.get("hold_fraction", 0.0)
  if kind not in SCHEDULES:
    raise ValueError(f"optimizer.schedule must be one of {SCHEDULES}, got {kind!r}")
  if not 0.0 <= hold_fraction < 1.0:
    raise ValueError(f"optimizer.hold_fraction={hold_fraction!r} must lie in [0, 1)")
  warmup = min(opt.warmup_steps, max(total_steps - 1, 0))
  rest = max(total_steps - warmup, 1)
  hold = int(hold_fraction * rest)
  decay_steps = max(rest - hold, 1)
  if kind == "cosine":
    decay = optax.cosine_decay_schedule(opt.lr, decay_steps, alpha=opt.end_lr_factor)
  else:
    decay = optax.linear_schedule(opt.lr, opt.lr * opt.end_lr_factor, decay_steps)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, opt.lr, warmup), optax.constant_schedule(opt.lr), decay], [warmup, warmup + hold])


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  parts = [optax.clip_by_global_norm(opt.grad_clip)] if opt.grad_clip > 0 else []
  parts.append(optax.adamw(schedule(opt, total_steps), b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay,
                           mask=decay_mask))
  return optax.chain(*parts)


def ema_update(ema, params, decay: float):
  """EMA of weights; the first update (step 0) copies the parameters."""
  return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p.astype(jnp.float32)).astype(e.dtype), ema, params)
