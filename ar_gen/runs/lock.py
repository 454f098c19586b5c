"""The work-directory lock of `ar-gen train`: one trainer per work directory at a time.

`WorkdirLock(workdir)` is an exclusive `fcntl.flock` on `WORKDIR/train.lock`, held for the whole training, with
the holder written inside as JSON (host, pid, start time, command). A second trainer fails at once with
`WorkdirLocked`, naming the holder. The operating system releases a flock when its process dies (SIGKILL, a
crash, a lost node), so a lock left behind by a dead trainer is taken over, with a warning naming it. On
release the file is emptied, not deleted (deleting a flocked file lets two processes lock two different files).
Where the file system has no flock (some network mounts), the holder's pid is checked instead: a lock of a live
process, or of another host, is refused; one of a dead process on this host is taken over.
A work directory in a bucket (`gs://...`) has no flock: there the holder record is the lock (`BucketLock`). The
holder rewrites it every `HEARTBEAT_SECONDS` from a background thread; a record younger than `STALE_SECONDS` is
refused, an older one (its trainer is gone) is taken over with a warning, and a released lock is an empty record.
Each holder writes a random token into the record and rewrites (or releases) it only while the token is still its
own: a trainer that stalled past `STALE_SECONDS` and was taken over stops its heartbeat instead of clearing the new
holder's lock.
Two trainers started within the same few seconds on one bucket directory are not told apart (object stores offer
no atomic test-and-set through this layer): start one job per work directory.
Multi-host jobs: process 0 takes the lock (`acquire_for_job`), and every process learns whether it got it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from ar_gen import fileio, filelock
from ar_gen.errors import WorkdirLocked

log = logging.getLogger("ar_gen.train")

LOCK_FILE = "train.lock"
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 600.0


def _me() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime()), "command": " ".join(sys.argv)}


def _describe(holder: dict | None) -> str:
  if not holder:
    return "another process (no holder recorded)"
  return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: {holder.get('command')}"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """An exclusive lock on a work directory (a context manager)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None
    self._flocked = False

  def _holder(self) -> dict | None:
    try:
      with open(self.path) as f:
        text = f.read().strip()
      return json.loads(text) if text else None
    except (OSError, ValueError):
      return None

  def acquire(self) -> "WorkdirLock":
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      locked = filelock.lock(fd, wait=False)
    except BlockingIOError:
      os.close(fd)
      raise WorkdirLocked(f"{os.path.dirname(self.path)} is being trained by {_describe(self._holder())} "
                          f"(lock {self.path}); wait for it to finish or stop it first") from None
    except OSError:
      os.close(fd)
      raise
    if not locked:
      try:
        self._check_pid_lock()
      except WorkdirLocked:
        os.close(fd)
        raise
    previous = self._holder()
    if previous and previous.get("pid") != os.getpid():
      log.warning("taking over the lock of a trainer that is gone (%s) in %s", _describe(previous), self.path)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_me()).encode(), 0)
    os.fsync(fd)
    self._fd, self._flocked = fd, locked
    return self

  def _check_pid_lock(self) -> None:
    """Without flock: refuse a holder that may be alive (any other host, or a live pid on this one)."""
    holder = self._holder()
    if not holder:
      return
    if holder.get("host") != socket.gethostname() or _pid_alive(int(holder.get("pid", -1))):
      raise WorkdirLocked(f"{os.path.dirname(self.path)} is being trained by {_describe(holder)} (lock "
                          f"{self.path}, no flock on this file system); if that job is gone, delete the lock file")

  def release(self) -> None:
    if self._fd is None:
      return
    os.ftruncate(self._fd, 0)
    if self._flocked:
      filelock.unlock(self._fd)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


class BucketLock:
  """The lock of a work directory in a bucket: a holder record with a heartbeat (see the module docstring)."""

  def __init__(self, workdir: str):
    self.path = fileio.join(workdir, LOCK_FILE)
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self._record = {**_me(), "token": os.urandom(8).hex()}

  def _holder(self) -> dict | None:
    try:
      text = fileio.read_text(self.path).strip() if fileio.exists(self.path) else ""
      return json.loads(text) if text else None
    except (OSError, ValueError):
      return None

  def _beat(self) -> None:
    fileio.write_json(self.path, {**self._record, "heartbeat": time.time()}, indent=None)

  def _still_mine(self) -> bool:
    holder = self._holder()
    return bool(holder) and holder.get("token") == self._record["token"]

  def acquire(self) -> "BucketLock":
    holder = self._holder()
    if holder:
      age = time.time() - float(holder.get("heartbeat", 0))
      if age < STALE_SECONDS:
        raise WorkdirLocked(f"{fileio.dirname(self.path)} is being trained by {_describe(holder)} (lock "
                            f"{self.path}, heartbeat {age:.0f} s ago); wait for it to finish or stop it first")
      log.warning("taking over the lock of a trainer that is gone (%s; no heartbeat for %.0f s) in %s",
                  _describe(holder), age, self.path)
    self._beat()
    self._thread = threading.Thread(target=self._heartbeat, name="ar-gen-lock-heartbeat", daemon=True)
    self._thread.start()
    return self

  def _heartbeat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        if not self._still_mine():
          log.error("the lock %s was taken over by %s: this trainer's heartbeat stops (two trainers now write this "
                    "work directory: stop one)", self.path, _describe(self._holder()))
          return
        self._beat()
      except Exception as e:  # pylint: disable=broad-except  # a failed heartbeat must not stop the training
        log.warning("could not refresh the lock %s: %s", self.path, e)

  def release(self) -> None:
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    if self._still_mine():
      fileio.write_text(self.path, "")

  def __enter__(self) -> "BucketLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


def workdir_lock(workdir: str) -> WorkdirLock | BucketLock:
  """The lock kind of `workdir`: a flock on a local (or mounted) disk, a heartbeat record in a bucket."""
  return BucketLock(workdir) if fileio.is_url(workdir) else WorkdirLock(workdir)


def acquire_for_job(workdir: str) -> WorkdirLock | BucketLock | None:
  """Process 0 takes the work directory's lock; every process raises WorkdirLocked if it could not."""
  lock, error = None, None
  if jax.process_index() == 0:
    try:
      lock = workdir_lock(workdir).acquire()
    except Exception as e:  # pylint: disable=broad-except  # any failure: the other processes must hear of it
      error = e
  if jax.process_count() > 1:
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if not int(ok) and error is None:
      raise WorkdirLocked(f"process 0 could not lock {workdir} (see its log for why)")
  if error is not None:
    raise error
  return lock
