"""Preemption: SIGTERM / SIGINT ask the training loop to save a checkpoint and leave with exit status 0.

The handler only sets a flag; the loop looks at it after each step. With several processes they must stop at the
same step (a checkpoint is a collective), so the flags are combined across processes every
`fault.preemption_check_steps` steps: one process told to stop stops them all.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger("ar_gen.train")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionGuard:
  """While active, SIGTERM and SIGINT are recorded instead of killing the process."""

  def __init__(self, check_every_steps: int = 1):
    self.check_every_steps = max(1, int(check_every_steps))
    self.received: str | None = None
    self._previous = {}

  def __enter__(self) -> "PreemptionGuard":
    if threading.current_thread() is not threading.main_thread():  # signals can only be caught there
      return self
    for sig in SIGNALS:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, frame) -> None:
    if self.received is not None and signum == signal.SIGINT:  # a second Ctrl-C: leave now
      raise KeyboardInterrupt
    self.received = signal.Signals(signum).name
    log.warning("%s received: saving a checkpoint after this step, then exiting", self.received)

  def should_stop(self, step: int) -> bool:
    """Whether every process should stop after `step` (a collective with several processes)."""
    if jax.process_count() == 1:
      return self.received is not None
    if step % self.check_every_steps:
      return False
    flags = multihost_utils.process_allgather(np.int32(self.received is not None))
    return bool(np.any(flags))
