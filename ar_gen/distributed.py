"""`initialize_distributed()`: join JAX's multi-controller runtime, or do nothing on a single host.

Order of precedence: explicit arguments (`ar-gen train --coordinator HOST:PORT --num-processes N --process-id I`,
what launch/local.py passes), then the environment variables AR_GEN_COORDINATOR / AR_GEN_NUM_PROCESSES /
AR_GEN_PROCESS_ID, then SLURM (a job step with more than one task: `srun`) and Cloud TPU pod slices (more than one
worker host), whose coordinator JAX finds by itself. Anything else is a single process: a no-op. On CPU the
processes exchange collectives over gloo.

`all_processes(rows)`: the rows each process computed, concatenated in process order (for evaluations that score
each process's share of a dataset).
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger("ar_gen")


def detect(environ: dict[str, str] | None = None) -> str:
  """Which multi-process environment this is: 'explicit', 'slurm', 'tpu-pod' or 'single'."""
  env = os.environ if environ is None else environ
  if env.get("AR_GEN_COORDINATOR"):
    return "explicit"
  if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1 and "SLURM_PROCID" in env:
    return "slurm"
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
  if len(hosts) > 1:
    return "tpu-pod"
  return "single"


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, environ: dict[str, str] | None = None) -> str:
  """Initializes jax.distributed when there is more than one process; returns the environment it found."""
  env = os.environ if environ is None else environ
  coordinator = coordinator or env.get("AR_GEN_COORDINATOR")
  if coordinator:
    num_processes = num_processes if num_processes is not None else env.get("AR_GEN_NUM_PROCESSES")
    process_id = process_id if process_id is not None else env.get("AR_GEN_PROCESS_ID")
    missing = [name for name, value in (("--num-processes", num_processes), ("--process-id", process_id))
               if value is None]
    if missing:
      raise ValueError(f"a coordinator address ({coordinator}) needs {' and '.join(missing)} as well")
    kind, kwargs = "explicit", dict(coordinator_address=coordinator, num_processes=int(num_processes),
                                    process_id=int(process_id))
  else:
    kind, kwargs = detect(env), {}
    if kind == "single":
      return kind
  if jax.distributed.is_initialized():
    return kind
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  log.info("jax.distributed (%s): process %d of %d, %d local / %d global devices", kind, jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  return kind


def all_processes(x_N: np.ndarray) -> np.ndarray:
  """The rows of every process, concatenated in process order (this process's rows alone on one process); the
  processes may hold different numbers of rows, none at all included."""
  if jax.process_count() == 1:
    return x_N
  counts = multihost_utils.process_allgather(np.asarray([len(x_N)]))[:, 0]
  padded = np.zeros((int(counts.max()), *x_N.shape[1:]), x_N.dtype)
  padded[:len(x_N)] = x_N
  every = multihost_utils.process_allgather(padded)
  return np.concatenate([every[p, :int(n)] for p, n in enumerate(counts)])
