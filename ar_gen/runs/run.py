"""A run: a config's task with its graph definition, optimizer and train-state functions; loading a work dir.

The train state is a plain pytree {step, params, opt_state, ema, rest, rng}; `rest` holds the module's
non-trainable variables (e.g. code usage statistics). `Run(config)` loads the config's frozen components (real
weights) or, with `abstract_frozen=True`, only their shapes (what `ar-gen compile` needs: no checkpoint on disk).
`restore_run(workdir)` gives a trained work directory's run and state; the trainer, the sampler, the evaluators
and the frozen-component loader all use it, and it lives here, not in the trainer, so that none of them imports the
training loop.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen import config as config_lib, fileio
from ar_gen.runs import checkpoint, frozen as frozen_lib, optim, sharding
from ar_gen.runs.task import Task, get_task


def split_params(model: nnx.Module):
  """(graphdef, params, rest) of a module."""
  return nnx.split(model, nnx.Param, ...)


class Run:
  """A task with its graph definition, optimizer, frozen components and state functions for one config."""

  def __init__(self, config: ml_collections.ConfigDict, *, abstract_frozen: bool = False,
               frozen: dict[str, frozen_lib.FrozenComponent] | None = None):
    self.config = config
    self.frozen = frozen if frozen is not None else frozen_lib.load_all(config, abstract=abstract_frozen)
    self.task: Task = get_task(config, self.frozen)
    self.tx = optim.make_optimizer(config.optimizer, config.total_steps)
    abstract_module = nnx.eval_shape(lambda: self.task.build(nnx.Rngs(0)))
    self.graphdef = nnx.graphdef(abstract_module)
    self.param_names = sharding.logical_names(nnx.state(abstract_module, nnx.Param))
    self.use_ema = config.get("ema_decay", 0.0) > 0

  @property
  def frozen_state(self) -> dict[str, Any] | None:
    """{name: state} of the frozen components, the `frozen` argument of the task's jitted functions."""
    return {name: c.state for name, c in self.frozen.items()} or None

  def init(self, rng: jax.Array) -> dict[str, Any]:
    """A fresh train state (traceable: use under jit for shape-first, sharded init)."""
    _, params, rest = split_params(self.task.build(nnx.Rngs(rng)))
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": self.tx.init(params),
            "ema": params if self.use_ema else None, "rest": rest, "rng": rng}

  def abstract_state(self) -> dict[str, Any]:
    return jax.eval_shape(self.init, jax.random.PRNGKey(0))

  def model_parts(self) -> tuple[str, ...]:
    """The entries of the train state that `model(state)` reads (the EMA weights if kept, else the raw ones)."""
    return ("step", "rest", "ema" if self.use_ema else "params")

  def model(self, state: dict[str, Any], ema: bool = True) -> nnx.Module:
    """The module with the EMA weights (if kept and asked for) or the raw ones."""
    params = state["ema"] if ema and state.get("ema") is not None else state["params"]
    return nnx.merge(self.graphdef, params, state["rest"])


def save_workdir(config: ml_collections.ConfigDict, workdir: str, fill: Callable[[nnx.Module], nnx.Module]) -> str:
  """A work directory (config.json + a checkpoint at step 0) of a run that was not trained here: its model is
  `fill(fresh_module)` (a converter writes released weights into it; `ar-gen cluster-codebook` a VQ's weights and
  its cluster table)."""
  config.lock()
  run = Run(config)
  state = jax.jit(run.init)(jax.random.PRNGKey(0))
  _, params, rest = split_params(fill(run.model(state, ema=False)))
  state.update(params=params, rest=rest, ema=params if run.use_ema else None)
  config_lib.save_config(config, workdir)
  ckpt = checkpoint.Checkpointer(workdir, keep=1, async_save=False)
  ckpt.save(0, state, force=True)
  ckpt.close()
  return workdir


def restore_run(workdir: str, step: int | None = None, full: bool = False, overrides: tuple[str, ...] = (),
                sharding: jax.sharding.Sharding | None = None) -> tuple[Run, dict[str, Any], int]:
  """Loads a work directory's config (with `KEY=VALUE` overrides), frozen components and newest readable (or
  given) checkpoint: (run, state, step). Only what `run.model(state)` needs is read (`Run.model_parts`: no
  optimizer state, one copy of the weights), unless `full`; each array is read straight into `sharding` (e.g.
  replicated over a sampling mesh; default: the first local device). Read-only: a reader never moves or deletes
  a file, and reads safely beside a running trainer."""
  config = config_lib.load_workdir_config(workdir, overrides)
  run = Run(config)
  ckpt = checkpoint.Checkpointer(workdir, async_save=False, read_only=True)
  missing = FileNotFoundError(f"{workdir} has no checkpoint under {ckpt.directory}: train it first with "
                              f"`ar-gen train --config ... --workdir {workdir}`")
  try:
    if not fileio.isdir(ckpt.directory):
      raise missing
    abstract = run.abstract_state()
    if not full:
      abstract = {k: abstract[k] for k in run.model_parts()}
    target = checkpoint.restore_target(abstract, sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    try:  # a step listing that is empty for a moment (a trainer beside us) is retried inside
      state, _, step = ckpt.restore(target, step=step, with_data=False, partial=not full)
    except FileNotFoundError as e:
      if str(e).startswith("no checkpoint in"):
        raise missing from None
      raise
  finally:
    ckpt.close()
  return run, state, step
