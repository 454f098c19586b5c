"""Optimizer from config: AdamW with linear warmup + cosine decay, gradient clipping, and weight EMA.

`config.optimizer`: lr, end_lr_factor, warmup_steps, b1, b2, weight_decay (matrices and kernels only),
grad_clip (global norm, 0 = off). `config.ema_decay` (0 = no EMA).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  warmup = min(opt.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=opt.lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1),
      end_value=opt.lr * opt.end_lr_factor)


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  parts = [optax.clip_by_global_norm(opt.grad_clip)] if opt.grad_clip > 0 else []
  parts.append(optax.adamw(schedule(opt, total_steps), b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay,
                           mask=decay_mask))
  return optax.chain(*parts)


def ema_update(ema, params, decay: float):
  """EMA of weights; the first update (step 0) copies the parameters."""
  return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p.astype(jnp.float32)).astype(e.dtype), ema, params)
