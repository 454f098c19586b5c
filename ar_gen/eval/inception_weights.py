"""pytorch-fid's Inception weights -> ar-gen's FID Inception: conversion, where the converted file lives, loading.

`ar-gen convert-inception pt_inception-2015-12-05-6726825d.pth --out FILE` reads pytorch-fid's state dict (torch
is needed for this step only) and writes FILE as an .npz of float32 arrays under the PyTorch names and layouts.
Loading maps each name onto the NNX module: `X.conv.weight` [O, I, kh, kw] -> `X.conv.kernel` [kh, kw, I, O],
`X.bn.{weight, bias, running_mean, running_var}` -> `X.bn.{scale, bias, mean, var}`, `fc.weight` -> `fc.kernel`
transposed. Every missing, unexpected or wrongly shaped entry is an error that names it.
"""

from __future__ import annotations

import os
from typing import Mapping

import jax
import numpy as np
from flax import nnx

from ar_gen import fileio, outputs, torch_files
from ar_gen.eval.inception import InceptionV3

PTH_NAME = "pt_inception-2015-12-05-6726825d.pth"
PTH_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PTH_NAME
PTH_FILE = f"pytorch-fid's FID Inception weights ({PTH_NAME}, from {PTH_URL})"
DEFAULT_FILE = os.path.join("~", ".cache", "ar_gen", "inception_fid.npz")
ENV_VAR = "AR_GEN_INCEPTION"
BN_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _torch_name(path: tuple) -> str:
  *module, leaf = (str(p) for p in path)
  if module[-1] == "bn":
    return ".".join(module + [BN_NAMES[leaf]])
  return ".".join(module + ["weight" if leaf == "kernel" else leaf])


def _to_torch_layout(path: tuple, value: np.ndarray) -> np.ndarray:
  if str(path[-1]) != "kernel":
    return value
  return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T


def _from_torch_layout(path: tuple, value: np.ndarray) -> np.ndarray:
  if str(path[-1]) != "kernel":
    return value
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T


def torch_layout() -> dict[str, tuple[int, ...]]:
  """Every entry pytorch-fid's FID Inception state dict must have (without `num_batches_tracked`): its shape."""
  abstract = nnx.eval_shape(lambda: InceptionV3(rngs=nnx.Rngs(0)))
  return {_torch_name(path): tuple(_to_torch_layout(path, np.empty(v.value.shape, np.uint8)).shape)
          for path, v in nnx.to_flat_state(nnx.state(abstract))}


def from_torch(state_dict: Mapping[str, np.ndarray]) -> InceptionV3:
  """The NNX Inception holding a pytorch-fid state dict (numpy arrays under PyTorch's names)."""
  state_dict = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  model = nnx.eval_shape(lambda: InceptionV3(rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(model)
  flat = nnx.to_flat_state(state)
  expected = {_torch_name(path) for path, _ in flat}
  missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
  if missing or unexpected:
    raise ValueError(f"not pytorch-fid's FID Inception weights: missing {missing[:5]}"
                     f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                     f"{' ...' if len(unexpected) > 5 else ''}")
  leaves = []
  for path, variable in flat:
    name = _torch_name(path)
    value = _from_torch_layout(path, np.asarray(state_dict[name], np.float32))
    if value.shape != variable.value.shape:
      raise ValueError(f"{name}: shape {np.shape(state_dict[name])} does not fit the FID Inception "
                       f"(expects {_to_torch_layout(path, np.empty(variable.value.shape, np.uint8)).shape})")
    leaves.append((path, variable.replace(jax.numpy.asarray(value))))
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def convert(pth: str, out: str, overwrite: bool = False) -> dict:
  """pytorch-fid's .pth -> an .npz (PyTorch names and layouts, float32), checked against the network first; an
  existing `out` is refused unless `overwrite`."""
  out = outputs.claim_file(out, overwrite)
  state_dict = {k: v.astype(np.float32) for k, v in torch_files.load_state_dict(pth, PTH_FILE).items()
                if not k.endswith("num_batches_tracked")}
  try:
    from_torch(state_dict)  # validates names and shapes
  except ValueError as e:
    raise ValueError(f"{pth}: {e}") from None
  fileio.save_npz(out, **state_dict)
  return {"out": out, "arrays": len(state_dict), "parameters": int(sum(v.size for v in state_dict.values()))}


def find(path: str | None = None) -> str:
  """The converted weights: `path`, else $AR_GEN_INCEPTION, else ~/.cache/ar_gen/inception_fid.npz."""
  candidate = path or os.environ.get(ENV_VAR) or os.path.expanduser(DEFAULT_FILE)
  if not fileio.exists(candidate):
    raise FileNotFoundError(
        f"FID Inception weights not found at {candidate} (looked at --inception, ${ENV_VAR}, {DEFAULT_FILE}). "
        f"Download pytorch-fid's {PTH_NAME} from {PTH_URL} and convert it once: "
        f"`ar-gen convert-inception {PTH_NAME} --out {DEFAULT_FILE}`")
  return candidate


def load(path: str | None = None) -> InceptionV3:
  """The FID Inception from converted weights (see `find` for where they are looked for), batch norms folded."""
  file = find(path)
  try:
    state_dict = fileio.load_npz(file)
  except (OSError, ValueError) as e:
    raise ValueError(f"{file}: not a readable .npz of converted Inception weights ({e})") from e
  return from_torch(state_dict).fold_batch_norm()
