"""Exclusive advisory file locks (`fcntl.flock`), the one primitive under the work-directory lock of `ar-gen
train` (`ar_gen/runs/lock.py`) and the one-preparer lock of `folder:` datasets (`ar_gen/data/folder.py`).

The operating system releases a flock when its process dies, so a crashed holder never leaves a lock behind.
Some network file systems have no flock: `lock` then says so by returning False, and the caller decides.
"""

from __future__ import annotations

import errno
import fcntl

NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # what flock raises where the file system has none


def lock(fd, wait: bool) -> bool:
  """Locks the open file `fd` (a descriptor or file object) exclusively, waiting for the holder if `wait`; True
  if locked, False where the file system has no flock. Raises BlockingIOError if held elsewhere and not `wait`."""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
  except OSError as e:  # BlockingIOError (held elsewhere) has another errno and is raised
    if e.errno not in NO_FLOCK:
      raise
    return False
  return True


def unlock(fd) -> None:
  fcntl.flock(fd, fcntl.LOCK_UN)
