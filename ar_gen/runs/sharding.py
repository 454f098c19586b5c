"""Where each array of the train state lives on the mesh: logical axes declared by modules, mapped by config rules.

Modules name the axes of their weights (`nnx.with_partitioning(init, ("embed", "mlp"))`: the transformer's
projections and embeddings). `config.sharding.rules` maps logical names to mesh axes, e.g.
`(("embed", "fsdp"), ("mlp", "tensor"), ("qkv", "tensor"), ("vocab", "tensor"))`. A mesh axis is used only where
it has more than one device and divides the dimension, and at most once per array. Weights without names (the
tokenizers' convolutions) fall back to FSDP: their largest dimension divisible by the fsdp axis is split over it,
if the array has at least `sharding.fsdp_min_size` elements. Optimizer moments and the EMA follow the parameter
they belong to (matched by path and shape); everything else is replicated.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

DEFAULT_RULES = (("embed", "fsdp"), ("mlp", "tensor"), ("qkv", "tensor"), ("vocab", "tensor"))


def _is_spec(x) -> bool:
  return isinstance(x, P)


def logical_names(abstract_params: Any) -> Any:
  """The logical axis names of every parameter (a tree of PartitionSpecs of names; P() where undeclared)."""
  return nnx.get_partition_spec(abstract_params)


def mesh_spec(names: P, shape: tuple[int, ...], mesh: jax.sharding.Mesh, rules: dict[str, str],
              fsdp_min_size: int) -> P:
  """The mesh PartitionSpec of one array from its logical names (or the FSDP fallback)."""
  names = tuple(names) + (None,) * (len(shape) - len(names))
  axes, used = [], set()
  for name, dim in zip(names, shape):
    axis = rules.get(name) if isinstance(name, str) else None
    if axis is not None and axis not in used and mesh.shape[axis] > 1 and dim % mesh.shape[axis] == 0:
      axes.append(axis)
      used.add(axis)
    else:
      axes.append(None)
  if used or any(isinstance(n, str) for n in names):
    return P(*axes)
  fsdp = mesh.shape["fsdp"]
  size = 1
  for dim in shape:
    size *= dim
  if fsdp == 1 or size < fsdp_min_size:
    return P()
  divisible = [i for i, dim in enumerate(shape) if dim % fsdp == 0]
  if not divisible:
    return P()
  largest = max(divisible, key=lambda i: shape[i])
  return P(*("fsdp" if i == largest else None for i in range(len(shape))))


def _path_key(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def state_shardings(abstract_state: dict[str, Any], names: Any, mesh: jax.sharding.Mesh,
                    sharding_config: ml_collections.ConfigDict | None) -> Any:
  """NamedShardings for a train state {step, params, opt_state, ema, rest, rng}."""
  sharding_config = sharding_config or ml_collections.ConfigDict()
  rules = dict(sharding_config.get("rules", DEFAULT_RULES))
  unknown = sorted(set(rules.values()) - set(mesh.axis_names))
  if unknown:
    raise ValueError(f"sharding.rules map to mesh axes {unknown}, which are not among {mesh.axis_names}")
  min_size = int(sharding_config.get("fsdp_min_size", 2 ** 14))
  param_specs = {}
  flat_names = dict(jax.tree_util.tree_flatten_with_path(names, is_leaf=_is_spec)[0])
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state["params"])[0]:
    spec = mesh_spec(flat_names.get(path, P()), leaf.shape, mesh, rules, min_size)
    param_specs[_path_key(path)] = (leaf.shape, spec)
  lengths = sorted({len(k) for k in param_specs}, reverse=True)

  def place(path, leaf):
    key = _path_key(path)
    for n in lengths:  # a parameter, or an optimizer moment / EMA copy of one (same path suffix and shape)
      match = param_specs.get(key[-n:]) if len(key) >= n else None
      if match is not None and match[0] == leaf.shape:
        return NamedSharding(mesh, match[1])
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(place, abstract_state)


def describe(shardings: Any) -> str:
  """How many parameters are sharded over which axes, as text for the log."""
  counts: dict[str, int] = {}
  for s in jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding)):
    key = str(tuple(s.spec)) if s.spec else "replicated"
    counts[key] = counts.get(key, 0) + 1
  return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
