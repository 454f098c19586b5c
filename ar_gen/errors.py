"""Expected failures: `UserError` and its kinds. The `ar-gen` command prints one of these (and the built-in
ValueError / FileNotFoundError family the library raises for bad input) as one line `ar-gen CMD: error: ...`
with exit status 2; `--debug` adds the traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
  """A failure the user can fix; the message names the file, key or value at fault."""


class WorkdirLocked(UserError):
  """Another live `ar-gen train` holds the work directory; the message names it."""


class OutputExists(UserError):
  """An output directory or file already holds results; `--overwrite` replaces them."""
