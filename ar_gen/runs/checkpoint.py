"""Orbax checkpoints of a training run: the train state (params, optimizer, EMA, RNG, step) and the grain
iterator state, saved asynchronously, keeping the last K; restore of the latest into an abstract (sharded) target.

Orbax writes a step into a temporary directory and renames it when complete, so an interrupted save is never seen
as a step. A step that is listed but cannot be read (truncated or corrupt files) is moved aside to
`DIR/checkpoints_unreadable/STEP` with a warning, and the previous step is restored instead.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger("ar_gen.train")


class Checkpointer:
  """`DIR/checkpoints` managed by an Orbax CheckpointManager."""

  def __init__(self, workdir: str, keep: int = 2, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                             create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict | None = None, force: bool = False) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_state is not None:
      items["data"] = ocp.args.JsonSave(data_state)
    self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, abstract_state: Any, step: int | None = None,
              with_data: bool = True) -> tuple[Any, dict | None, int]:
    """Restores `step`, or else the latest readable step, into the structure and shardings of `abstract_state`."""
    if step is not None:
      return self._restore(abstract_state, step, with_data)
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    errors = []
    for step in steps:
      try:
        return self._restore(abstract_state, step, with_data)
      except Exception as e:  # pylint: disable=broad-except  # any unreadable step: fall back to the previous
        errors.append(f"step {step}: {type(e).__name__}: {str(e)[:300]}")
        self._set_aside(step)
        log.warning("checkpoint step %d in %s is unreadable (%s: %s); moved to %s; trying the previous step", step,
                    self.directory, type(e).__name__, str(e)[:200], self.unreadable_directory)
    raise ValueError(f"no readable checkpoint in {self.directory}:\n  " + "\n  ".join(errors))

  @property
  def unreadable_directory(self) -> str:
    return self.directory + "_unreadable"

  def _set_aside(self, step: int) -> None:
    """Moves an unreadable step out of the manager's directory (so the run can save that step again)."""
    if jax.process_index() == 0:
      os.makedirs(self.unreadable_directory, exist_ok=True)
      target = os.path.join(self.unreadable_directory, str(step))
      shutil.rmtree(target, ignore_errors=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint step {step} set aside")
    self.manager.reload()

  def _restore(self, abstract_state: Any, step: int, with_data: bool) -> tuple[Any, dict | None, int]:
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if with_data and "data" in self.manager.item_metadata(step):
      items["data"] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], restored.get("data") if with_data else None, step

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_target(abstract: Any, sharding: Any) -> Any:
  """ShapeDtypeStructs of `abstract` placed by `sharding` (one Sharding for all leaves, or a matching tree)."""
  if isinstance(sharding, jax.sharding.Sharding):
    sharding = jax.tree.map(lambda _: sharding, abstract)
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, sharding)
