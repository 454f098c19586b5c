"""What the trainer needs from a model: the `Task` interface, and tasks found by name.

A task builds its NNX module, computes the loss of a batch (a pure function of the module's state, traced inside
the jitted step), may change state after the optimizer update (`post_update`, e.g. dead code restart), turns
metrics summed over a logging window into numbers (`summarize`), draws a picture of its progress (`visualize`) and
says which module other runs read when they use this run as a frozen component (`export`). A task constructor does
no I/O: it gets the config and the run's frozen components (`ar_gen/runs/frozen.py`, loaded in one place: real
weights to train, shapes only to compile), and the frozen components' state reaches `prepare`, `loss`, `visualize`
and sampling as the `frozen` argument of the jitted functions, a dict {name: state}.

Tasks by name: the non-generative tasks (`tokenizer`, `classifier`, `clustered_tokenizer`, `feature_encoder`,
`discriminative_tokenizer`) are listed in `BUILTIN`; every other `config.task = NAME` is the family module
`ar_gen.families.NAME` (its class `Task`), by convention.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
from flax import nnx

from ar_gen.config import ConfigError
from ar_gen.data import sources

BUILTIN = {
    "tokenizer": "tokenizers.task:TokenizerTask",
    "classifier": "ar_gen.eval.classifier:ClassifierTask",
    "clustered_tokenizer": "tokenizers.clustered:ClusteredTokenizerTask",
    "feature_encoder": "tokenizers.ssl:FeatureEncoderTask",
    "discriminative_tokenizer": "tokenizers.discriminative:DiscriminativeTokenizerTask",
}
FAMILIES_PACKAGE = "ar_gen.families"


class Task(Protocol):
  """The interface of a training task."""

  config: ml_collections.ConfigDict
  picture: str  # the name of `visualize`'s pictures (images/NAME_STEP.png, TensorBoard tag)
  exports: str  # what `export` gives other runs: 'tokenizer', 'generator', 'classifier'

  def __init__(self, config: ml_collections.ConfigDict, frozen: dict[str, Any]):
    """`frozen`: the run's frozen components by name (`ar_gen.runs.frozen.FrozenComponent`)."""

  def build(self, rngs: nnx.Rngs) -> nnx.Module:
    """The module to train, freshly initialised."""

  def prepare(self, batch: dict[str, jax.Array], frozen: Any) -> dict[str, jax.Array]:
    """Turns a batch into the loss's inputs inside the jitted step (not differentiated)."""

  def loss(self, model: nnx.Module, batch: dict[str, jax.Array], rng: jax.Array, step: jax.Array,
           frozen: Any) -> tuple[jax.Array, dict[str, jax.Array], Any]:
    """(scalar loss, metrics to log, extras for post_update); metrics may be scalars or arrays to sum."""

  def post_update(self, model: nnx.Module, extras: Any, rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
    """Changes `model` in place after the optimizer update; returns extra metrics."""

  def summarize(self, window: dict[str, np.ndarray]) -> dict[str, float]:
    """Turns the non-scalar metrics summed over a logging window into numbers."""

  def visualize(self, model: nnx.Module, batch: dict[str, jax.Array], frozen: Any) -> jax.Array:
    """Rows of images [R, N, H, W, C] in [-1, 1] showing the model on a fixed batch (traced under jit)."""

  def export(self, model: nnx.Module) -> nnx.Module:
    """The module another run reads when it uses this run as a frozen component."""

  def check_source(self, source: Any) -> None:
    """Refuses a training dataset (`ar_gen.data.sources.Source`) this task cannot learn from, by name, before
    any step runs (more classes than the model has, tokens of another tokenizer)."""


class TaskBase:
  """Defaults of the optional parts of `Task`; a task overrides what it has."""

  picture = "samples"
  exports = "generator"

  def __init__(self, config: ml_collections.ConfigDict, frozen: dict[str, Any]):
    self.config, self.frozen = config, frozen

  def prepare(self, batch: dict[str, jax.Array], frozen: Any) -> dict[str, jax.Array]:
    del frozen
    return batch

  def post_update(self, model: nnx.Module, extras: Any, rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
    return {}

  def summarize(self, window: dict[str, np.ndarray]) -> dict[str, float]:
    return {}

  def export(self, model: nnx.Module) -> nnx.Module:
    return model

  def check_source(self, source: Any) -> None:
    """A class-conditional model (`model.num_classes`) must have a class id for every label of the data."""
    model_classes = self.config.model.get("num_classes")
    data_classes = sources.num_classes(source)
    if model_classes is not None and data_classes is not None and data_classes > model_classes:
      raise ConfigError(f"data.train={self.config.data.train!r} has {data_classes} classes but "
                        f"model.num_classes={model_classes}: set --config.model.num_classes={data_classes}")


def family_names() -> tuple[str, ...]:
  """The names of the family modules under ar_gen/families (each is a `config.task`)."""
  package = importlib.import_module(FAMILIES_PACKAGE)
  return tuple(sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")))


def task_names() -> tuple[str, ...]:
  return tuple(sorted(BUILTIN)) + family_names()


def task_class(name: str) -> type:
  """The task class of `config.task = name`."""
  if name in BUILTIN:
    module_name, _, class_name = BUILTIN[name].partition(":")
  elif name in family_names():
    module_name, class_name = f"{FAMILIES_PACKAGE}.{name}", "Task"
  else:
    raise ValueError(f"unknown task {name!r}; known tasks: {list(task_names())}")
  return getattr(importlib.import_module(module_name), class_name)


def get_task(config: ml_collections.ConfigDict, frozen: dict[str, Any]) -> Task:
  """Instantiates the task named by `config.task` with its frozen components."""
  return task_class(config.task)(config, frozen)
