"""`ar-gen compile`: compile a config's train step for a TPU topology you do not have, and report its memory.

JAX compiles ahead of time for a described TPU topology (`jax.experimental.topologies`) through libtpu, which
runs on a CPU-only machine: `pip install -e '.[tpu]'` there. The step is lowered exactly as the trainer runs it
(same mesh from `config.mesh`, same state shardings, donated state, the global batch sharded over data x fsdp),
from shapes alone: no data is read (token datasets excepted: one record gives the sequence length), no
parameter is materialised, and frozen components need only their config (a work directory's config.json, or
`frozen.tokenizer=configs/X.py`), not a checkpoint.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ar_gen.data import pipeline
from ar_gen.runs import mesh as mesh_lib, sharding
from ar_gen.runs.run import Run
from ar_gen.train.trainer import make_step

# chips -> the 2-D / 3-D shape of a slice, for the usual names (v5e-16 = 16 chips = 4x4; v4-32 = 16 chips = 2x2x4)
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
              512: "8x8x8"}


def topology_name(topology: str) -> str:
  """'v5e-16' -> 'v5e:4x4'; 'v4-32' -> 'v4:2x2x4' (v4 / v5p count TensorCores: 2 per chip); 'v5e:4x4' as is."""
  if ":" in topology:
    return topology
  match = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", topology)
  if not match:
    raise ValueError(f"--topology must look like v5e-16, v6e-64, v4-32, v5p-128 or v5e:4x4; got {topology!r}")
  kind, count = match.group(1), int(match.group(2))
  kind = "v5e" if kind == "v5litepod" else kind
  if kind in ("v4", "v5p"):
    chips = count // 2
    if chips not in _SHAPES_3D:
      raise ValueError(f"no standard {kind} slice with {count} cores; pass the shape, e.g. {kind}:2x2x4")
    return f"{kind}:{_SHAPES_3D[chips]}"
  if count not in _SHAPES_2D:
    raise ValueError(f"no standard {kind} slice with {count} chips; pass the shape, e.g. {kind}:4x4")
  return f"{kind}:{_SHAPES_2D[count]}"


def topology_devices(topology: str) -> list:
  """The devices of a described TPU topology (needs libtpu, not TPU hardware); `local`: this machine's devices."""
  if topology == "local":
    return jax.devices()
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    return list(topologies.get_topology_desc(platform="tpu", topology_name=topology_name(topology)).devices)
  except Exception as e:  # pylint: disable=broad-except  # libtpu missing or the name unknown to it
    raise ValueError(f"could not describe TPU topology {topology!r} ({topology_name(topology)}): {e}. "
                       "Compiling for a TPU topology needs libtpu: pip install -e '.[tpu]' (a CPU-only "
                       "machine is fine)") from None


def abstract_batch(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of one global training batch."""
  b, data = config.batch_size, config.data
  if str(data.train).startswith("tokens:"):
    record = pipeline.open_split(data, "train")[0]
    return {"tokens": jax.ShapeDtypeStruct((b, len(record["tokens"])), jnp.int32),
            "label": jax.ShapeDtypeStruct((b,), jnp.int32)}
  return {"image": jax.ShapeDtypeStruct((b, data.image_size, data.image_size, data.channels), jnp.float32),
          "label": jax.ShapeDtypeStruct((b,), jnp.int32)}


def compile_step(config: ml_collections.ConfigDict, devices: list) -> dict:
  """Lowers and compiles the train step on `devices`; returns memory per device and the mesh."""
  shape = mesh_lib.mesh_shape(config.mesh, len(devices))
  mesh = Mesh(np.array(devices).reshape(shape), mesh_lib.AXES)
  run = Run(config, abstract_frozen=True)
  abstract = run.abstract_state()
  state_sharding = sharding.state_shardings(abstract, run.param_names, mesh, config.get("sharding"))
  replicated = NamedSharding(mesh, P())
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sharding)
  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
           for k, v in abstract_batch(config).items()}
  frozen = run.frozen_state
  if frozen is not None:
    frozen = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=replicated), frozen)
  step = jax.jit(make_step(run), donate_argnums=0, out_shardings=(state_sharding, replicated))
  compiled = step.lower(state, batch, frozen).compile()
  memory = compiled.memory_analysis()
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
            "generated_code_size_in_bytes")
  report = {f.replace("_size_in_bytes", ""): int(getattr(memory, f)) for f in fields}
  report["total"] = report["argument"] + report["output"] - report["alias"] + report["temp"]
  return {"mesh": dict(zip(mesh_lib.AXES, shape)), "devices": len(devices), "device_kind": devices[0].device_kind,
          "params": params, "bytes_per_device": report,
          "state_shardings": sharding.describe(state_sharding)}


def format_report(result: dict) -> str:
  gib = lambda n: f"{n / 2 ** 30:.3f} GiB"
  m = result["bytes_per_device"]
  return "\n".join([
      f"{result['devices']} x {result['device_kind']}, mesh {result['mesh']}, {result['params']:,} parameters",
      f"state shardings: {result['state_shardings']}",
      "memory per device: " + ", ".join(f"{k} {gib(v)}" for k, v in m.items() if k != "generated_code"),
  ])
