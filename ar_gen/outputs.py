"""Output paths of commands that write results (`ar-gen sample --out`, `extract-tokens --out`, `fid --out`):
checked before any work starts, never replaced silently.

`claim_dir(out, results, overwrite)` refuses a directory that already holds any of the named results (files or
folders the command writes) unless `overwrite`, which then removes exactly those results (nothing else in the
directory) so that no old file is left beside the new ones; a path that is an existing file is refused.
`claim_file(path, overwrite)` is the same for one output file. Only process 0 removes anything.
"""

from __future__ import annotations

import os
import shutil

import jax

from ar_gen.errors import OutputExists, UserError


def claim_dir(out: str, results: tuple[str, ...], overwrite: bool = False, flag: str = "--out") -> str:
  """Makes `out` ready to receive `results` (names inside it); returns its absolute path."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f"{flag} {out} is an existing file, not a directory")
  present = [name for name in results if os.path.lexists(os.path.join(out, name))]
  if present and not overwrite:
    raise OutputExists(f"{flag} {out} already holds results ({', '.join(present)}); pass --overwrite to replace "
                       "them, or choose another directory")
  if jax.process_index() == 0:
    for name in present:
      path = os.path.join(out, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
    os.makedirs(out, exist_ok=True)
  return out


def claim_file(path: str, overwrite: bool = False, flag: str = "--out") -> str:
  """Makes sure `path` can be written as a new result file (its folder exists); returns its absolute path."""
  path = os.path.abspath(path)
  if os.path.isdir(path):
    raise UserError(f"{flag} {path} is a directory; give a file name, e.g. {os.path.join(path, 'results.json')}")
  if os.path.exists(path) and not overwrite:
    raise OutputExists(f"{flag} {path} already exists; pass --overwrite to replace it, or choose another file")
  parent = os.path.dirname(path)
  if os.path.exists(parent) and not os.path.isdir(parent):
    raise UserError(f"{flag} {path}: {parent} is a file, not a directory")
  if jax.process_index() == 0:
    os.makedirs(parent, exist_ok=True)
  return path
