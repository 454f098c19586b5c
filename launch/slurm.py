#!/usr/bin/env python3
"""Write and submit a SLURM batch script that trains on N nodes x G GPUs.

  python launch/slurm.py --nodes 4 --gpus-per-node 8 --time 24:00:00 --partition gpu \
      -- --config configs/imagenet256_vq16.py --workdir /shared/runs/vq16

One task per node drives all G GPUs of its node; `srun` starts the tasks and `ar-gen train` joins them with
`jax.distributed` (which reads the SLURM environment). The work directory must be on storage every node sees.
SLURM sends SIGTERM `--signal-seconds` before the time limit (and on preemption): ar-gen saves a checkpoint and
exits 0; with `--requeue` the job is put back in the queue and resumes from it. The script is written to
`--script` (default runs/slurm/JOB.sbatch) and submitted with `sbatch`; `--dry-run` prints it and the sbatch
command instead. Required: --nodes, --gpus-per-node, --time, and the train args after `--`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_train_args, shell, split_argv  # noqa: E402  pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(args: argparse.Namespace, train_args: list[str]) -> str:
  """The sbatch script text."""
  lines = ["#!/bin/bash", f"#SBATCH --job-name={args.job_name}", f"#SBATCH --nodes={args.nodes}",
           "#SBATCH --ntasks-per-node=1", f"#SBATCH --gpus-per-node={args.gpus_per_node}",
           f"#SBATCH --cpus-per-task={args.cpus_per_task}", f"#SBATCH --time={args.time}",
           f"#SBATCH --output={args.log_dir}/%x-%j.out", f"#SBATCH --signal=TERM@{args.signal_seconds}"]
  if args.partition:
    lines.append(f"#SBATCH --partition={args.partition}")
  if args.account:
    lines.append(f"#SBATCH --account={args.account}")
  if args.requeue:
    lines.append("#SBATCH --requeue")
  venv = os.path.abspath(args.venv)
  lines += ["", "set -euo pipefail", f"cd {shell([args.repo])}",
            "export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}",
            'echo "job $SLURM_JOB_ID: $SLURM_NNODES nodes ($SLURM_JOB_NODELIST), $SLURM_GPUS_PER_NODE GPUs each"',
            "srun --kill-on-bad-exit=1 " + shell([os.path.join(venv, "bin", "ar-gen"), "train", *train_args]), ""]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  own, train_args = split_argv(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--nodes", type=int, required=True)
  parser.add_argument("--gpus-per-node", type=int, required=True)
  parser.add_argument("--time", required=True, help="wall-clock limit, e.g. 24:00:00")
  parser.add_argument("--job-name", default="ar-gen")
  parser.add_argument("--partition", default=None)
  parser.add_argument("--account", default=None)
  parser.add_argument("--cpus-per-task", type=int, default=16)
  parser.add_argument("--signal-seconds", type=int, default=300, help="SIGTERM this long before the time limit")
  parser.add_argument("--requeue", action="store_true", help="requeue on preemption / time limit and resume")
  parser.add_argument("--repo", default=REPO, help="the ar-gen checkout on the cluster's shared storage")
  parser.add_argument("--venv", default=os.path.join(REPO, ".venv"), help="its virtual environment (.[cuda])")
  parser.add_argument("--log-dir", default=os.path.join(REPO, "runs", "slurm"))
  parser.add_argument("--script", default=None, help="where to write the script (default LOG_DIR/JOB.sbatch)")
  parser.add_argument("--dry-run", action="store_true", help="print the script and the sbatch command only")
  args = parser.parse_args(own)
  check_train_args(parser, train_args)
  if args.nodes < 1 or args.gpus_per_node < 1:
    parser.error("--nodes and --gpus-per-node must be at least 1")
  text = script(args, train_args)
  path = args.script or os.path.join(args.log_dir, f"{args.job_name}.sbatch")
  submit = ["sbatch", path]
  if args.dry_run:
    print(f"# {path}\n{text}\n# submit:\n{shell(submit)}")
    return 0
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  os.makedirs(args.log_dir, exist_ok=True)
  with open(path, "w") as f:
    f.write(text)
  print(f"wrote {path}")
  return subprocess.call(submit)


if __name__ == "__main__":
  sys.exit(main())
