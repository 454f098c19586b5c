"""Orbax checkpoints of a training run: the train state (params, optimizer, EMA, RNG, step) and the grain
iterator state, saved asynchronously, keeping the last K; restore of the newest into an abstract (sharded) target.

What a restore can meet, and what it does:
- a step that does not match the target (other array shapes or tree: the config changed): `CheckpointMismatch`,
  naming the differing arrays; nothing is touched, and no other step is tried (they would not match either);
- a step that is listed but cannot be read (truncated or corrupt files): the previous step is restored instead,
  with a warning. Only the trainer (`read_only=False`), and only once an older step was read, moves the
  unreadable steps aside to `DIR/checkpoints_unreadable/STEP`, so that it can save them again; if no step can be
  read, nothing is moved. Readers never move or delete a file. An out-of-memory error is not unreadability: it
  is raised as it is;
- a step that a running trainer deleted while it was being read (it keeps only the last K): the newest steps are
  listed again and read.
Orbax writes a step into a temporary directory and renames it when complete, so an interrupted save is never
listed as a step. Readers open the directory read-only (`read_only=True`): they create nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ar_gen import fileio
from ar_gen.errors import UserError

log = logging.getLogger("ar_gen.train")

MAX_VANISHED = 8  # how often a reader re-lists after the trainer deleted the step it was reading
VANISH_WAIT_SECONDS = 0.5


def _agreed(value: int) -> int:
  """Process 0's `value`, on every process."""
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def _everywhere(flag: bool) -> bool:
  """Whether `flag` holds on every process."""
  if jax.process_count() == 1:
    return flag
  return bool(np.all(multihost_utils.process_allgather(np.int32(flag))))


def _retry_vanished(fn):
  """Calls `fn` (an Orbax listing), again when a step directory vanished under it (FileNotFoundError)."""
  for attempt in range(MAX_VANISHED):
    try:
      return fn()
    except FileNotFoundError:
      if attempt == MAX_VANISHED - 1:
        raise
      time.sleep(0.05)


class CheckpointMismatch(UserError, ValueError):
  """A checkpoint whose arrays do not match the run's state (a config that differs from the one it was saved
  with); the message names the arrays."""


def _path_name(path) -> str:
  return ".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """{dotted path: shape} of a tree's arrays (empty nodes and None leaves, which hold no data, left out)."""
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)[0]
  return {_path_name(p): tuple(leaf.shape) for p, leaf in flat if leaf is not None}


def compare_shapes(saved: Any, target: Any, limit: int = 6, parts: tuple[str, ...] | None = None) -> list[str]:
  """Differences between a checkpoint's array metadata and a target state, as readable lines; with `parts`, only
  those top-level entries of the checkpoint are compared (a partial restore)."""
  a, b = _shapes(saved), _shapes(target)
  if parts is not None:
    a = {k: v for k, v in a.items() if k.split(".")[0] in parts}
  lines = [f"{k}: {a.get(k, 'absent')} in the checkpoint, {b.get(k, 'absent')} for this config"
           for k in sorted(set(a) | set(b)) if a.get(k, "absent") != b.get(k, "absent")]
  return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


class Checkpointer:
  """`DIR/checkpoints` managed by an Orbax CheckpointManager; `read_only` for every reader (sample, eval, frozen
  components)."""

  def __init__(self, workdir: str, keep: int = 2, async_save: bool = True, read_only: bool = False):
    if keep < 1:
      raise ValueError(f"keep_ckpts must be at least 1, got {keep}")
    self.directory = fileio.join(workdir, "checkpoints")
    self.read_only = read_only
    self.manager = _retry_vanished(lambda: ocp.CheckpointManager(
        fileio.epath(self.directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                             create=not read_only, read_only=read_only),
        item_handlers={"state": ocp.PyTreeCheckpointHandler() if read_only else ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler()}))

  def steps(self) -> list[int]:
    """The committed steps, newest first, listed afresh (a trainer beside a reader saves and deletes)."""
    def listing():
      self.manager.reload()
      return sorted(self.manager.all_steps(), reverse=True)
    return _retry_vanished(listing)

  def latest_step(self) -> int | None:
    steps = self.steps()
    return steps[0] if steps else None

  def save(self, step: int, state: Any, data_state: dict | None = None, force: bool = False) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      items["data"] = ocp.args.JsonSave(data_state)
    self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: Any, step: int | None = None, with_data: bool = True,
              partial: bool = False) -> tuple[Any, dict | None, int]:
    """Restores `step`, or else the newest readable step, into the structure and shardings of `abstract_state`;
    with `partial` (readers only), `abstract_state` names a subset of the saved top-level entries (e.g. no
    optimizer state) and only those are read.

    With several processes, process 0 picks each step tried and a step counts as read only if every process read
    it, so all restore the same one."""
    if partial and not self.read_only:
      raise ValueError("a partial restore is for readers (read_only=True)")
    if step is not None:
      self._check_matches(step, abstract_state, partial)
      return self._restore(abstract_state, step, with_data, partial)
    failed, vanished, tried = [], 0, set()
    while True:
      steps = [s for s in self.steps() if s not in tried]
      step = _agreed(steps[0] if steps else -1)
      if step < 0 and self.read_only and not failed and vanished < MAX_VANISHED:
        vanished += 1  # a trainer keeping 1 checkpoint may be between deleting the old and committing the new
        time.sleep(VANISH_WAIT_SECONDS)
        continue
      if step < 0:
        break
      try:
        self._check_matches(step, abstract_state, partial)
        result, error = self._restore(abstract_state, step, with_data, partial), None
      except CheckpointMismatch:
        raise
      except Exception as e:  # pylint: disable=broad-except  # unreadable files: fall back to the previous step
        if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e):
          raise  # the machine's fault, not the files'
        result, error = None, e
      if _everywhere(error is None):
        self._set_aside([s for s, _ in failed])
        return result
      if _agreed(int(self._vanished(step))) and vanished < MAX_VANISHED:
        vanished += 1  # deleted by the trainer (keep_ckpts) while read: list the steps again
        log.info("checkpoint step %d was deleted while being read; reading the newest again", step)
        continue
      tried.add(step)
      reason = f"{type(error).__name__}: {str(error)[:300]}" if error else "unreadable on another process"
      failed.append((step, reason))
      log.warning("checkpoint step %d in %s is unreadable (%s); trying the previous step", step, self.directory,
                  reason[:200])
    if not failed:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    raise ValueError(f"no readable checkpoint in {self.directory} (nothing was moved):\n  " +
                     "\n  ".join(f"step {s}: {r}" for s, r in failed))

  def _set_aside(self, steps: list[int]) -> None:
    """The trainer moves unreadable steps newer than the one it restored to `checkpoints_unreadable/` (never over
    an earlier set-aside copy), so that it can save those steps again; readers move nothing."""
    if self.read_only or not steps:
      return
    if jax.process_index() == 0:
      fileio.makedirs(self.unreadable_directory)
      for step in steps:
        target = fileio.join(self.unreadable_directory, str(step))
        if fileio.exists(target):
          target += time.strftime(".%Y%m%d-%H%M%S")
        fileio.move(self.step_directory(step), target)
        log.warning("moved the unreadable checkpoint step %d to %s", step, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoints {steps} set aside")
    self.manager.reload()

  def _vanished(self, step: int) -> bool:
    """Whether `step` was deleted (by the trainer keeping the last K) rather than being unreadable; a reader
    gives a deletion in progress a moment to finish."""
    if self.read_only and fileio.isdir(self.step_directory(step)):
      time.sleep(VANISH_WAIT_SECONDS)
    return not fileio.isdir(self.step_directory(step))

  def step_directory(self, step: int) -> str:
    return fileio.join(self.directory, str(step))

  @property
  def unreadable_directory(self) -> str:
    return self.directory + "_unreadable"

  def _check_matches(self, step: int, abstract_state: Any, partial: bool = False) -> None:
    """Raises CheckpointMismatch if the step's saved arrays differ from the target's (read from metadata only)."""
    saved = self.manager.item_metadata(step)["state"]
    if saved is None:
      raise ValueError(f"checkpoint step {step} has no readable state metadata")
    differences = compare_shapes(saved, abstract_state, parts=tuple(abstract_state) if partial else None)
    if differences:
      raise CheckpointMismatch(
          f"checkpoint step {step} in {self.directory} does not match this config (was config.json edited, or "
          "is this another run's work directory?):\n  " + "\n  ".join(differences))

  def _restore(self, abstract_state: Any, step: int, with_data: bool,
               partial: bool = False) -> tuple[Any, dict | None, int]:
    if self.read_only:
      restore_args = jax.tree.map(
          lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype), abstract_state)
      items = {"state": ocp.args.PyTreeRestore(item=abstract_state, restore_args=restore_args,
                                               partial_restore=partial)}
    else:
      items = {"state": ocp.args.StandardRestore(abstract_state)}
    if with_data and "data" in self.manager.item_metadata(step):
      items["data"] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored.get("data") if with_data else None, step

  def close(self) -> None:
    if not self.read_only:
      self.manager.wait_until_finished()
    self.manager.close()


def restore_target(abstract: Any, sharding: Any) -> Any:
  """ShapeDtypeStructs of `abstract` placed by `sharding` (one Sharding for all leaves, or a matching tree)."""
  if isinstance(sharding, jax.sharding.Sharding):
    sharding = jax.tree.map(lambda _: sharding, abstract)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, sharding)
