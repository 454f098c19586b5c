"""Orbax checkpoints of a training run: the train state (params, optimizer, EMA, RNG, step) and the grain
iterator state, saved asynchronously, keeping the last K; restore of the latest into an abstract (sharded) target.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


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
    """Restores `step` (default: the latest) into the structure and shardings of `abstract_state`."""
    step = self.manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
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
