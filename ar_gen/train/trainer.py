"""The trainer: `train(config, workdir)` runs any task (tokenizers, AR families, the classifier) from a config.

Sections: setup and logging, mesh, input, model + optimizer (shape-first init), update step, checkpoint and
resume, loop; the evaluators of `config.evals` (`ar_gen/eval/evaluators.py`) run in the loop when due. The train
state is `ar_gen.runs.run.Run`'s pytree {step, params, opt_state, ema, rest, rng}, created directly in its
shardings (`ar_gen/runs/sharding.py`: logical axes mapped by `config.sharding.rules`, FSDP fallback), never whole
on one device. The step
is one jitted pure function with the state donated; per-step randomness is `fold_in(rng, step)`, so a resumed run
repeats the uninterrupted one exactly.

Faults: SIGTERM / SIGINT save a checkpoint after the current step and return normally (exit 0); an unreadable
latest checkpoint falls back to the previous one (checkpoint.py); a non-finite loss stops the run with the first
step it appeared at named, before anything is saved, so the last good checkpoint stays.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from ar_gen import config as config_lib
from ar_gen import fileio, images
from ar_gen.data import pipeline
from ar_gen.eval import evaluators as evaluators_lib
from ar_gen.runs import checkpoint, lock as lock_lib, mesh as mesh_lib, optim, sharding
from ar_gen.runs.run import Run, split_params
from ar_gen.runs.task import Task
from ar_gen.train import metrics_log, preemption

log = logging.getLogger("ar_gen.train")


def parameter_overview(params: Any) -> str:
  """Parameter counts per top-level submodule, as text."""
  rows = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    top = str(getattr(path[0], "key", path[0]))
    rows[top] = rows.get(top, 0) + math.prod(leaf.shape)
  lines = [f"  {name:<24}{count:>14,}" for name, count in rows.items()]
  return "\n".join(["parameters:"] + lines + [f"  {'total':<24}{sum(rows.values()):>14,}"])


def micro_batches(batch: Any, count: int) -> Any:
  """[B, ...] leaves -> [count, B / count, ...]; micro-batch i holds rows i, i + count, ..., so each keeps the
  batch's spread over the data-parallel devices."""
  def split(x):
    return jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1)
  return jax.tree.map(split, batch)


def _combine_micro(losses, metrics, extras):
  """The micro-batches' outputs as one batch's: mean loss and scalar metrics (means), summed array metrics
  (counts), extras joined along the batch axis."""
  metrics = {k: v.mean(0) if v.ndim == 1 else v.sum(0) for k, v in metrics.items()}
  extras = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]) if x.ndim > 1 else x[-1], extras)
  return losses.mean(), metrics, extras


def make_step(run: Run):
  """The update step of a run: `step(state, batch, frozen) -> (new state, metrics)`, a pure function to jit.

  With `config.grad_accum_steps = K` the batch is cut into K micro-batches (`micro_batches`), run one after the
  other (a scan: the model's activations of one micro-batch at a time; `task.prepare`, e.g. a frozen tokenizer's
  encoding, still sees the whole batch), their gradients averaged: for losses that are means over examples, the
  same update as the whole batch at once (tests/test_trainer.py). Terms computed from batch statistics (LFQ's
  entropy of the mean code distribution, VQGAN's adaptive GAN weight) are computed per micro-batch. Each
  micro-batch draws its own random numbers (dropout), and state outside the parameters (e.g. codebook
  statistics) passes from one micro-batch to the next."""
  config, task = run.config, run.task
  inject_nan_at = (config.get("fault") or {}).get("inject_nan_at_step", 0)
  accum = config.get("grad_accum_steps", 1)

  def step_fn(state: dict[str, Any], batch: dict[str, jax.Array], frozen: Any = None):
    step = state["step"]
    rng = jax.random.fold_in(state["rng"], step)
    batch = task.prepare(batch, frozen)  # inside the step, outside the differentiated function

    def loss_fn(params, rest, batch, rng):
      model = nnx.merge(run.graphdef, params, jax.tree.map(jnp.asarray, rest))  # fresh Variables in this trace
      loss, metrics, extras = task.loss(model, batch, rng, step, frozen)
      if inject_nan_at:  # fault injection for tests of the non-finite guard
        loss = jnp.where(step + 1 == inject_nan_at, jnp.nan, loss)
      return loss, (metrics, extras, nnx.state(model, nnx.Not(nnx.Param)))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if accum == 1:
      (loss, (metrics, extras, rest)), grads = grad_fn(state["params"], state["rest"], batch, rng)
    else:
      def micro_step(carry, xs):
        rest, grad_sum = carry
        micro, i = xs
        micro_rng = jax.random.fold_in(jax.random.fold_in(rng, 2), i)  # 1 is post_update's
        (loss, (metrics, extras, rest)), grads = grad_fn(state["params"], rest, micro, micro_rng)
        return (rest, jax.tree.map(jnp.add, grad_sum, grads)), (loss, metrics, extras)

      zeros = jax.tree.map(jnp.zeros_like, state["params"])
      (rest, grad_sum), outs = jax.lax.scan(micro_step, (state["rest"], zeros),
                                            (micro_batches(batch, accum), jnp.arange(accum)))
      grads = jax.tree.map(lambda g: g / accum, grad_sum)
      loss, metrics, extras = _combine_micro(*outs)
    updates, opt_state = run.tx.update(grads, state["opt_state"], state["params"])
    model = nnx.merge(run.graphdef, optax.apply_updates(state["params"], updates), rest)
    metrics.update(task.post_update(model, extras, jax.random.fold_in(rng, 1), step))
    _, params, rest = split_params(model)
    ema = state["ema"]
    if ema is not None:
      decay = jnp.where(step == 0, 0.0, config.ema_decay)
      ema = optim.ema_update(ema, params, decay)
    metrics.update(loss=loss, grad_norm=optax.global_norm(grads),
                   lr=optim.schedule(config.optimizer, config.total_steps)(step))
    metrics[FIRST_NONFINITE] = jnp.where(jnp.isfinite(loss), 0, step + 1).astype(jnp.int32)
    new_state = {"step": step + 1, "params": params, "opt_state": opt_state, "ema": ema, "rest": rest,
                 "rng": state["rng"]}
    return new_state, metrics

  return step_fn


FIRST_NONFINITE = "first_nonfinite_step"  # 1-based step whose loss was not finite, 0 if none


def _accumulate(sums, metrics):
  total = jax.tree.map(lambda s, m: s + m.astype(s.dtype), sums, metrics)
  total[FIRST_NONFINITE] = jnp.where(sums[FIRST_NONFINITE] > 0, sums[FIRST_NONFINITE], metrics[FIRST_NONFINITE])
  return total


def _summarize(task: Task, sums: dict[str, np.ndarray], count: int) -> dict[str, float]:
  scalars = {k: float(v) / count for k, v in sums.items() if np.ndim(v) == 0 and k != FIRST_NONFINITE}
  scalars.update(task.summarize({k: v for k, v in sums.items() if np.ndim(v) > 0}))
  return scalars


def _is_real_change(key: str, old: Any, new: Any) -> bool:
  """A change of what the run trains, or a smaller keep_ckpts (the next save would delete older checkpoints)."""
  if key == "keep_ckpts":
    return isinstance(old, int) and isinstance(new, int) and new < old
  return not config_lib.is_runtime_key(key)


def check_config_change(config: ml_collections.ConfigDict, workdir: str, allow: bool = False) -> bool:
  """Compares `config` with the work directory's config.json before anything is written: if the directory has
  checkpoints, a difference outside `config_lib.RUNTIME_KEYS` (or a smaller keep_ckpts) is refused, naming the
  keys, unless `allow`. A run that never saved a checkpoint may start again with another config. Returns whether
  the config differs in what it trains."""
  if not fileio.isfile(fileio.join(workdir, "config.json")):
    return False
  changes = config_lib.differing_keys(config_lib.load_workdir_config(workdir), config)
  real = [c for c in changes if _is_real_change(*c)]
  for key, old, new in changes:
    log.info("config key %s: %r in %s/config.json, %r now", key, old, workdir, new)
  reader = checkpoint.Checkpointer(workdir, async_save=False, read_only=True)
  try:
    has_checkpoint = reader.latest_step() is not None
  finally:
    reader.close()
  if not has_checkpoint:
    return False
  if real and not allow:
    shown = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, old, new in real[:8])
    more = f" (and {len(real) - 8} more)" if len(real) > 8 else ""
    raise config_lib.ConfigError(
        f"{workdir} was trained with another config: {shown}{more}. Run the command that trained it, use a new "
        "--workdir, or pass --allow-config-change to continue this run's checkpoints with the new config")
  return bool(real)


def train(config: ml_collections.ConfigDict, workdir: str, stop_after_steps: int | None = None,
          allow_config_change: bool = False) -> dict:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the last logged metrics.

  Args:
    config: a resolved config (see configs/).
    workdir: the run's directory (config.json, metrics.jsonl, checkpoints/, tb/, images/, train.lock).
    stop_after_steps: leave after this many steps of this invocation (with a checkpoint), e.g. to fit a job's
      time limit; the schedule still spans `config.total_steps`.
    allow_config_change: continue a work directory trained with another config (see `check_config_change`);
      its old config.json is kept as config.before_step_N.json.
  Nothing in the work directory is written before the lock is taken, the config compared and the checkpoint
  restored (or found absent), so a refused command leaves every file as it was.
  """
  workdir = fileio.absolute(workdir)
  if fileio.isfile(workdir):
    raise NotADirectoryError(f"--workdir {workdir} is a file, not a directory")
  if stop_after_steps is not None and stop_after_steps < 1:
    raise ValueError(f"--stop-after-steps must be at least 1, got {stop_after_steps}")
  fileio.makedirs(workdir)
  lock = lock_lib.acquire_for_job(workdir)
  try:
    return _train(config, workdir, stop_after_steps, allow_config_change)
  finally:
    if lock is not None:
      lock.release()


def _save_config(config: ml_collections.ConfigDict, workdir: str, changed: bool, start: int) -> None:
  if jax.process_index() != 0:
    return
  path = fileio.join(workdir, "config.json")
  if changed:
    fileio.write_bytes(fileio.join(workdir, f"config.before_step_{start}.json"), fileio.read_bytes(path))
  config_lib.save_config(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir: str, stop_after_steps: int | None,
           allow_config_change: bool) -> dict:
  # ---------------------------------------------------------------- setup and logging
  jax.config.update("jax_threefry_partitionable", True)
  changed = check_config_change(config, workdir, allow_config_change)
  evaluators = evaluators_lib.from_config(config, workdir)  # checked before anything loads
  run = Run(config)
  task = run.task

  # ---------------------------------------------------------------- mesh
  mesh = mesh_lib.make_mesh(config.mesh)
  mesh_lib.check_batch_size(mesh, config.batch_size)
  if config.get("grad_accum_steps", 1) > 1:
    mesh_lib.check_batch_size(mesh, config.batch_size // config.grad_accum_steps, "a micro-batch "
                              f"(batch_size / grad_accum_steps = {config.batch_size // config.grad_accum_steps})")
  replicated = mesh_lib.replicated(mesh)

  # ---------------------------------------------------------------- input
  source = pipeline.open_split(config.data, "train")
  task.check_source(source)
  train_iter = iter(pipeline.train_dataset(config.data, config.batch_size, config.seed, source=source))
  vis_batch = next(pipeline.eval_batches(config.data, config.get("vis_examples", 8)))

  # ---------------------------------------------------------------- model + optimizer, shape-first
  abstract = run.abstract_state()
  state_sharding = sharding.state_shardings(abstract, run.param_names, mesh, config.get("sharding"))
  log.info("mesh %s; state shardings: %s", dict(mesh.shape), sharding.describe(state_sharding))
  ckpt = checkpoint.Checkpointer(workdir, keep=config.keep_ckpts)
  start = 0
  if ckpt.latest_step() is not None:
    try:
      state, data_state, start = ckpt.restore(checkpoint.restore_target(abstract, state_sharding))
    except Exception:
      ckpt.close()
      raise
    if data_state is not None:
      train_iter.set_state(data_state)
    log.info("resumed from step %d of %s", start, ckpt.directory)
  else:
    state = jax.jit(run.init, out_shardings=state_sharding)(jax.random.PRNGKey(config.seed))
  _save_config(config, workdir, changed, start)
  log.info("%s", parameter_overview(state["params"]))

  # ---------------------------------------------------------------- update step
  jstep = jax.jit(make_step(run), donate_argnums=0, out_shardings=(state_sharding, replicated))
  jadd = jax.jit(_accumulate, donate_argnums=0)
  frozen = jax.device_put(run.frozen_state, replicated) if run.frozen_state is not None else None
  jvis = jax.jit(lambda state, batch, frozen: task.visualize(run.model(state), batch, frozen))

  def visualize(step: int) -> None:
    rows = np.asarray(jax.device_get(jvis(state, vis_batch, frozen)))
    picture = images.make_grid(rows.reshape(-1, *rows.shape[2:]), num_cols=rows.shape[1])
    if jax.process_index() == 0:
      images.save_png(picture, fileio.join(workdir, "images", f"{task.picture}_{step:07d}.png"))
      logger.write_image(step, task.picture, picture)

  # ---------------------------------------------------------------- loop
  stop = config.total_steps if stop_after_steps is None else min(config.total_steps, start + stop_after_steps)
  logger = metrics_log.MetricLogger(workdir, config.total_steps, initial_step=start)
  sums, count, last, t0 = None, 0, {}, time.perf_counter()
  vis_every = config.get("vis_every_steps", 0)
  fault = config.get("fault") or {}
  with preemption.PreemptionGuard(fault.get("preemption_check_steps", 10)) as guard:
    try:
      for step in range(start, stop):
        batch = mesh_lib.global_batch(mesh, next(train_iter))
        state, metrics = jstep(state, batch, frozen)
        sums = metrics if sums is None else jadd(sums, metrics)
        count, done = count + 1, step + 1
        logger.advance()
        if done == fault.get("sigterm_after_step", 0):  # fault injection: a preemption notice
          os.kill(os.getpid(), signal.SIGTERM)
        preempted = guard.should_stop(done)
        save = done % config.ckpt_every_steps == 0 or done == stop or preempted
        if save or done % config.log_every_steps == 0:  # never checkpoint or log a state that saw a NaN
          bad_step = int(jax.device_get(sums[FIRST_NONFINITE]))
          if bad_step:
            ckpt.manager.wait_until_finished()
            raise FloatingPointError(
                f"the loss is not finite at step {bad_step} (of {config.total_steps}); stopped without saving; the "
                f"last good checkpoint is step {ckpt.latest_step()} in {ckpt.directory}")
        if done % config.log_every_steps == 0 or done == stop or preempted:
          last = _summarize(task, jax.device_get(sums), count)
          last["steps_per_second"] = count / (time.perf_counter() - t0)
          logger.write(done, last)
          sums, count, t0 = None, 0, time.perf_counter()
        if vis_every and (done % vis_every == 0 or done == stop):
          visualize(done)
        if save:
          ckpt.save(done, state, train_iter.get_state(), force=preempted)
          logger.sync()  # a bucket's metrics.jsonl holds every line up to the checkpoint a resume starts from
        for evaluator in evaluators:
          if not preempted and evaluator.due(done, config.total_steps):
            numbers = evaluator(run, state, done)
            logger.write(done, {f"{evaluator.name}/{k}": v for k, v in numbers.items()})
            last.update({f"{evaluator.name}/{k}": v for k, v in numbers.items()})
        if preempted:
          log.warning("stopped by %s after step %d; checkpoint saved; run the same command to resume",
                      guard.received or "another process", done)
          last["preempted_at_step"] = done
          break
    finally:
      logger.close()
      ckpt.close()
  return last
