"""Device mesh from `config.mesh` (axes data, fsdp, tensor; -1 = all remaining devices) and batch placement.

This is the data-parallel core: batches are split over (data, fsdp), the train state is replicated. Per-process
batches become one global array with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import math

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  sizes = [int(mesh_config[a]) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if num_devices % known:
    raise ValueError(f"mesh {dict(zip(AXES, sizes))} does not divide {num_devices} devices")
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(zip(AXES, sizes))} uses {math.prod(sizes)} of {num_devices} devices")
  return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict) -> jax.sharding.Mesh:
  shape = mesh_shape(mesh_config, jax.device_count())
  return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def check_batch_size(mesh: jax.sharding.Mesh, batch_size: int, what: str | None = None) -> None:
  """The global batch (or `what`, e.g. a micro-batch) is split over the (data, fsdp) devices: it must divide
  evenly, said in those words."""
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if batch_size % ways:
    raise ValueError(f"{what or f'batch_size={batch_size}'} does not split over the {ways} data-parallel devices (mesh data="
                     f"{mesh.shape['data']} x fsdp={mesh.shape['fsdp']} of {mesh.size} devices): use a multiple of "
                     f"{ways}, e.g. --config.batch_size={max(ways, batch_size // ways * ways)}")


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(mesh: jax.sharding.Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
  """Assembles this process's share of a batch into global arrays sharded over (data, fsdp)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
