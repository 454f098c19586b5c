"""Output paths of commands that write results (`sample`, `extract-tokens`, `fid`, `demo`, the converters):
checked before any work starts, never replaced silently, cleared only just before the new results are written.

`claim_dir(out, results, overwrite)` checks, with no side effect, that `out` can take the named results (files or
folders the command writes): a directory that already holds any of them is refused unless `overwrite`; a path
that is a file, or a run's work directory (config.json, checkpoints/), is refused. It returns a `Claim`, whose
`clear()` the command calls right before it writes: that removes exactly the results found (nothing else in the
directory), so a command that fails before writing leaves the old results as they were, and old and new never
mix. `claim_file(path, overwrite)` is the same check for one output file (written by the command through a
temporary file). Only the primary process (process 0) removes anything. `removed_on_failure(*paths)` deletes
those paths that a failing block created (a converter's or `cluster-codebook`'s half-written work directory).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

from ar_gen import fileio
from ar_gen.errors import OutputExists, UserError

WORKDIR_MARKERS = ("config.json", "checkpoints")  # a run's work directory: never an output directory


@dataclasses.dataclass(frozen=True)
class Claim:
  """An output directory and the earlier results in it that `clear` removes."""

  path: str
  present: tuple[str, ...]

  def clear(self, primary: bool = True) -> str:
    """Removes the earlier results (on the primary process) and creates the directory; returns its path."""
    if primary:
      for name in self.present:
        if fileio.exists(fileio.join(self.path, name)):
          fileio.remove(fileio.join(self.path, name))
      fileio.makedirs(self.path)
    return self.path


def claim_dir(out: str, results: tuple[str, ...], overwrite: bool = False, flag: str = "--out") -> Claim:
  """Checks that `out` may receive `results` (names inside it); see the module docstring."""
  out = fileio.absolute(out)
  if fileio.isfile(out):
    raise UserError(f"{flag} {out} is an existing file, not a directory")
  markers = [m for m in WORKDIR_MARKERS if fileio.exists(fileio.join(out, m))]
  if markers:
    raise UserError(f"{flag} {out} is a run's work directory ({', '.join(markers)}); write into a folder of its "
                    f"own, e.g. {fileio.join(out, 'samples')}")
  present = tuple(name for name in results if fileio.exists(fileio.join(out, name)))
  if present and not overwrite:
    raise OutputExists(f"{flag} {out} already holds results ({', '.join(present)}); pass --overwrite to replace "
                       "them, or choose another directory")
  return Claim(out, present)


def claim_file(path: str, overwrite: bool = False, flag: str = "--out") -> str:
  """Checks that `path` may be written as a result file; returns its absolute path."""
  path = fileio.absolute(path)
  if fileio.isdir(path):
    raise UserError(f"{flag} {path} is a directory; give a file name, e.g. {fileio.join(path, 'results.json')}")
  if fileio.exists(path) and not overwrite:
    raise OutputExists(f"{flag} {path} already exists; pass --overwrite to replace it, or choose another file")
  if fileio.is_url(path):
    return path
  parent = fileio.dirname(path)
  while parent and not fileio.exists(parent):
    parent = fileio.dirname(parent)
  if parent and not fileio.isdir(parent):
    raise UserError(f"{flag} {path}: {parent} is a file, not a directory")
  return path


@contextlib.contextmanager
def removed_on_failure(*paths: str) -> Iterator[None]:
  """Deletes those of `paths` that did not exist before the block if it raises: no half-written output stays."""
  fresh = [p for p in paths if not fileio.exists(p)]
  try:
    yield
  except BaseException:
    for p in fresh:
      if fileio.exists(p):
        fileio.remove(p)
    raise
