"""Conditioning pytrees: what a batch of samples is conditioned on, and its null value for guidance.

The sampler driver doubles a batch to [condition; null condition] for classifier-free guidance without knowing
what the condition holds. Class-conditional families use `{"label": int32 [B]}` with the null class `num_classes`
(the class dropped in training); a family conditioned on a token prefix (a stage-1 model's output) defines its own
pytree and null value the same way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def class_labels(labels_B: jax.Array) -> dict[str, jax.Array]:
  """The condition of class-conditional sampling."""
  return {"label": labels_B}


def null_class_labels(cond: dict[str, jax.Array], num_classes: int) -> dict[str, jax.Array]:
  """The null condition of `cond`: every label replaced by the null class `num_classes`."""
  return {"label": jnp.full_like(cond["label"], num_classes)}
