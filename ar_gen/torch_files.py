"""The one reader of PyTorch weight files (`.pt` / `.pth`) in ar-gen: `load_state_dict`.

Files are read with `torch.load(path, map_location="cpu", weights_only=True)`: tensors, numbers, strings and
containers of them, plus the `argparse.Namespace` that training scripts save beside the weights; no other pickled
object is built, so no code in the file runs. Every way a file can be unfit (missing, a directory, not a torch
file, truncated, pickled objects, no tensors, a model without the expected keys) is a FileNotFoundError or a
ValueError whose message names the file and what was expected, for `ar-gen` to print as one line. Torch is needed
only here, and only for a file that starts like a torch.save file (a zip archive or a pickle).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import warnings
from typing import Any, Iterable

import numpy as np

from ar_gen import fileio
from ar_gen.errors import UserError

WRAPPER_KEYS = ("model", "module", "state_dict")  # where training scripts nest the weights
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6 is a zip archive
PICKLE_START = b"\x80"  # the legacy format starts with a pickle (protocol 2 or later)


def _check_file(path: str, expected: str) -> bool:
  """Whether the file at `path` is a zip archive; errors for what is plainly no torch.save file (no torch needed)."""
  if os.path.isdir(path):
    raise ValueError(f"{path} is a directory, not a file: expected {expected}")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such file (expected {expected})")
  with open(path, "rb") as f:
    head = f.read(len(ZIP_MAGIC))
  if not head:
    raise ValueError(f"{path} is empty: expected {expected}")
  if not head.startswith((ZIP_MAGIC, PICKLE_START)):
    raise ValueError(f"{path}: cannot be read as {expected}: it is not a torch.save file")
  return head == ZIP_MAGIC


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError("reading PyTorch weight files needs PyTorch: pip install torch (the CPU build is enough)") from e
  return torch


def _reason(error: Exception, is_zip: bool) -> str:
  """Why torch could not read a file, in a few words (never torch's advice to unpickle arbitrary objects)."""
  found = re.search(r"GLOBAL ([\w.]+)", str(error))
  if found:
    return f"it pickles a Python object ({found.group(1)}), not only tensors, and ar-gen unpickles no objects"
  if isinstance(error, EOFError):
    return "it ends early (truncated)"
  return "it is a zip archive, but truncated or not written by torch.save" if is_zip else "it is not a torch.save file"


def _load(path: str, expected: str) -> Any:
  if fileio.is_url(path):
    if not fileio.isfile(path):
      raise FileNotFoundError(f"{path}: no such file (expected {expected})")
    path = fileio.local_copy(path)  # torch.load reads local files
  is_zip = _check_file(path, expected)
  torch = _import_torch()
  allow = getattr(torch.serialization, "safe_globals", None)
  with allow([argparse.Namespace]) if allow else contextlib.nullcontext(), warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Detected pickle protocol")
    try:
      return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pylint: disable=broad-except  # torch raises a dozen types for bytes it cannot read
      raise ValueError(f"{path}: cannot be read as {expected}: {_reason(e, is_zip)}") from None


def _unwrap(obj: Any) -> Any:
  for key in WRAPPER_KEYS:
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      return obj[key]
  return obj


def _to_numpy(tensor) -> np.ndarray:
  tensor = tensor.detach().cpu()
  return (tensor.float() if tensor.is_floating_point() else tensor).numpy()


def require_keys(state_dict: dict, keys: Iterable[str], path: str, expected: str) -> None:
  """Raises ValueError naming `path`, `expected` and the missing keys if `state_dict` lacks any of `keys`."""
  missing = [k for k in keys if k not in state_dict]
  if missing:
    n = len(state_dict)
    held = f"{n} tensor{'s' * (n != 1)}: {', '.join(list(state_dict)[:3])}{' ...' * (n > 3)}"
    raise ValueError(f"{path} is not {expected}: it lacks {', '.join(missing[:6])}{' ...' * (len(missing) > 6)} "
                     f"(it holds {held})")


def load_state_dict(path: str, expected: str, required: Iterable[str] = (),
                    wrapper: str | None = None) -> dict[str, np.ndarray]:
  """The tensors of a PyTorch weight file as numpy (floating point as float32), under their state-dict names.

  A checkpoint that nests its weights under "model", "module" or "state_dict" is unwrapped (under `wrapper` when
  given, e.g. MAR's "model_ema": a file without it is an error naming the keys it has); entries that are not
  tensors (step counts, arguments) are dropped. `expected` says what the file should be (for error messages) and
  `required` lists keys it must hold.
  """
  obj = _load(path, expected)
  if wrapper is not None:
    if not isinstance(obj, dict) or not isinstance(obj.get(wrapper), dict):
      keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
      raise ValueError(f"{path} has no {wrapper!r} entry (it has: {keys}): expected {expected}")
    obj = obj[wrapper]
  obj = _unwrap(obj)
  if not isinstance(obj, dict):
    raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict: expected {expected}")
  state_dict = {str(k): _to_numpy(v) for k, v in obj.items() if hasattr(v, "detach")}
  if not state_dict:
    raise ValueError(f"{path} holds no tensors (keys: {', '.join(map(str, list(obj)[:5]))}): expected {expected}")
  require_keys(state_dict, required, path, expected)
  return state_dict
