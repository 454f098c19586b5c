#!/usr/bin/env python3
"""Start N processes on this machine that train together over localhost (JAX multi-controller runtime).

  python launch/local.py --processes 2 --devices-per-process 2 -- --config configs/mnist_vq.py --workdir runs/x

Everything after `--` is passed to `ar-gen train`. Each process gets AR_GEN_COORDINATOR=localhost:PORT,
AR_GEN_NUM_PROCESSES and AR_GEN_PROCESS_ID; on CPU, XLA_FLAGS gives it --devices-per-process fake devices, on
GPU, CUDA_VISIBLE_DEVICES gives it its own GPUs. Output lines are prefixed with [pI]. SIGTERM / SIGINT are passed
on to every process (each saves a checkpoint and exits 0). The exit status is the first non-zero one, else 0.
`--dry-run` prints the commands with their environments instead of running them.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_train_args, shell, split_argv  # noqa: E402  pylint: disable=g-import-not-at-top


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def commands(processes: int, devices: int, platform: str, port: int, train_args: list[str],
             python: str = sys.executable) -> list[tuple[dict[str, str], list[str]]]:
  """(environment additions, argv) of each process."""
  out = []
  for i in range(processes):
    env = {"AR_GEN_COORDINATOR": f"localhost:{port}", "AR_GEN_NUM_PROCESSES": str(processes),
           "AR_GEN_PROCESS_ID": str(i), "JAX_PLATFORMS": platform}
    if platform == "cpu":
      env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    else:
      env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i * devices + d) for d in range(devices))
    out.append((env, [python, "-m", "ar_gen.cli", "train", *train_args]))
  return out


def _stream(prefix: str, pipe) -> None:
  for line in iter(pipe.readline, ""):
    sys.stdout.write(f"{prefix} {line}")
    sys.stdout.flush()


def run(cmds: list[tuple[dict[str, str], list[str]]]) -> int:
  procs = []
  for i, (env, argv) in enumerate(cmds):
    procs.append(subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  threads = [threading.Thread(target=_stream, args=(f"[p{i}]", p.stdout), daemon=True) for i, p in enumerate(procs)]
  for t in threads:
    t.start()

  def forward(signum, frame):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, forward)
  codes = [p.wait() for p in procs]
  for t in threads:
    t.join(timeout=5)
  return next((c for c in codes if c), 0)


def main(argv: list[str] | None = None) -> int:
  own, train_args = split_argv(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--processes", type=int, required=True, help="number of processes")
  parser.add_argument("--devices-per-process", type=int, default=1, help="devices each process drives")
  parser.add_argument("--platform", choices=("cpu", "gpu"), default="cpu")
  parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
  parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
  args = parser.parse_args(own)
  check_train_args(parser, train_args)
  if args.processes < 1 or args.devices_per_process < 1:
    parser.error("--processes and --devices-per-process must be at least 1")
  cmds = commands(args.processes, args.devices_per_process, args.platform, args.port or free_port(), train_args)
  if args.dry_run:
    for env, cmd in cmds:
      print(shell([f"{k}={v}" for k, v in env.items()] + cmd))
    return 0
  return run(cmds)


if __name__ == "__main__":
  sys.exit(main())
