"""What the trainer needs from a model family: the `Task` interface and the registry of tasks by config name.

A task builds its NNX module, may hold `frozen` state it does not train (a pytree passed into the jitted step as
an argument, e.g. the tokenizer an AR model reads its tokens from), computes the loss of a batch (a pure function of the module's state, traced inside
the jitted step), may change non-trainable or trainable state after the optimizer update (`post_update`, e.g. dead
code restart), turns metrics summed over a logging window into numbers (`summarize`), and draws a picture of its
progress (`visualize`).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from flax import nnx

TASKS = {
    "tokenizer": "tokenizers.task:TokenizerTask",
    "next_token": "ar_gen.models.next_token_task:NextTokenTask",
    "next_scale": "ar_gen.models.next_scale_task:NextScaleTask",
    "classifier": "ar_gen.eval.classifier:ClassifierTask",
}


class Task(Protocol):
  """The interface of a training task."""

  config: ml_collections.ConfigDict
  frozen: Any  # a pytree the step reads but does not train, or None

  def build(self, rngs: nnx.Rngs) -> nnx.Module:
    """The module to train, freshly initialised."""

  def prepare(self, batch: dict[str, jax.Array], frozen: Any) -> dict[str, jax.Array]:
    """Optional: turns a batch into the loss's inputs inside the jitted step (not differentiated)."""

  def loss(self, model: nnx.Module, batch: dict[str, jax.Array], rng: jax.Array, step: jax.Array,
           frozen: Any) -> tuple[jax.Array, dict[str, jax.Array], Any]:
    """(scalar loss, metrics to log, extras for post_update); metrics may be scalars or arrays to sum."""

  def post_update(self, model: nnx.Module, extras: Any, rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
    """Changes `model` in place after the optimizer update; returns extra metrics."""

  def summarize(self, window: dict[str, np.ndarray]) -> dict[str, float]:
    """Turns the non-scalar metrics summed over a logging window into numbers."""

  def visualize(self, model: nnx.Module, batch: dict[str, jax.Array], frozen: Any) -> jax.Array:
    """Rows of images [R, N, H, W, C] in [-1, 1] showing the model on a fixed batch (traced under jit)."""


def get_task(config: ml_collections.ConfigDict) -> Task:
  """Instantiates the task named by `config.task`."""
  if config.task not in TASKS:
    raise ValueError(f"unknown task {config.task!r}; known tasks: {sorted(TASKS)}")
  module_name, _, class_name = TASKS[config.task].partition(":")
  return getattr(importlib.import_module(module_name), class_name)(config)
