#!/usr/bin/env python3
"""Train on a Cloud TPU VM slice: create (or target) it, ship this checkout, install `.[tpu]`, run on all workers.

  python launch/tpu.py --name argen-v5e --zone us-west4-a --accelerator-type v5litepod-16 \
      --version v2-alpha-tpuv5-lite --create --delete-after \
      -- --config configs/imagenet256_vq16.py --workdir /mnt/shared/runs/vq16

Steps (each a `gcloud` command, printed before it runs): create the slice (with --create; --spot for spot
capacity), pack the committed tree with `git archive` and copy it to every worker, unpack it and install it into
~/ar-gen/.venv, run `ar-gen train` on all workers at once (gcloud streams every worker's output; jax.distributed
finds the pod's coordinator by itself), and with --delete-after delete the slice when training ends. The work
directory must be storage every worker sees: a bucket URL (`--workdir gs://BUCKET/runs/x`, read and written
directly), or NFS. `--dry-run` prints the commands instead. Required: --name, --zone, and the train args after
`--`; --accelerator-type and --version with --create.

The venv is built with the first of python3.13, python3.12, python3.11, python3 on the VM that is Python >= 3.11
(ar-gen's minimum; TPU VM images ship older ones), else with a Python 3.11 that `uv` downloads (`--python`
names another interpreter).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_train_args, shell, split_argv  # noqa: E402  pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHIVE = "/tmp/ar-gen.tar.gz"
CANDIDATES = ("python3.13", "python3.12", "python3.11", "python3")


def venv_command(python: str | None = None) -> str:
  """Shell that creates ./.venv with a Python >= 3.11 (see the module docstring), or fails saying why."""
  if python:
    return f"{python} -m venv .venv"
  check = "-c 'import sys; sys.exit(sys.version_info < (3, 11))'"
  find = "; ".join(f"command -v {p} >/dev/null && {p} {check} && PY={p} && break" for p in CANDIDATES)
  return (f'PY=; for _ in 1; do {find}; done; if [ -n "$PY" ]; then "$PY" -m venv .venv; else '
          "echo 'no Python >= 3.11 on this VM: installing one with uv' >&2 && python3 -m pip install -q --user uv "
          "&& ~/.local/bin/uv venv --seed --python 3.11 .venv; fi")


def commands(args: argparse.Namespace, train_args: list[str]) -> list[list[str]]:
  """Every command, in order."""
  where = ["--zone", args.zone] + (["--project", args.project] if args.project else [])
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  cmds = []
  if args.create:
    cmds.append([*tpu, "create", args.name, *where, "--accelerator-type", args.accelerator_type,
                 "--version", args.version, *(["--spot"] if args.spot else [])])
  cmds.append(["git", "-C", args.repo, "archive", "--format=tar.gz", "-o", ARCHIVE, "HEAD"])
  cmds.append([*tpu, "scp", ARCHIVE, f"{args.name}:~/ar-gen.tar.gz", "--worker=all", *where])
  install = ("rm -rf ~/ar-gen && mkdir -p ~/ar-gen && tar xzf ~/ar-gen.tar.gz -C ~/ar-gen && cd ~/ar-gen && "
             f"{{ {venv_command(args.python)}; }} && .venv/bin/pip install -q -e '.[tpu]'")
  cmds.append([*tpu, "ssh", args.name, "--worker=all", *where, "--command", install])
  train = "cd ~/ar-gen && " + shell([".venv/bin/ar-gen", "train", *train_args]) + " 2>&1 | tee -a ~/ar-gen-train.log"
  cmds.append([*tpu, "ssh", args.name, "--worker=all", *where, "--command", train])
  if args.delete_after:
    cmds.append([*tpu, "delete", args.name, *where, "--quiet"])
  return cmds


def main(argv: list[str] | None = None) -> int:
  own, train_args = split_argv(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--name", required=True, help="TPU VM name")
  parser.add_argument("--zone", required=True)
  parser.add_argument("--project", default=None)
  parser.add_argument("--create", action="store_true", help="create the slice first")
  parser.add_argument("--accelerator-type", default=None, help="with --create, e.g. v5litepod-16, v4-32")
  parser.add_argument("--version", default=None, help="with --create: the TPU runtime, e.g. v2-alpha-tpuv5-lite")
  parser.add_argument("--spot", action="store_true", help="with --create: spot capacity")
  parser.add_argument("--delete-after", action="store_true", help="delete the slice when training ends")
  parser.add_argument("--python", default=None, help="the VM's interpreter for the venv (default: the newest "
                      "python3.1x >= 3.11 found, else one installed with uv)")
  parser.add_argument("--repo", default=REPO, help="the checkout to ship (its committed HEAD)")
  parser.add_argument("--dry-run", action="store_true", help="print the commands only")
  args = parser.parse_args(own)
  check_train_args(parser, train_args)
  if args.create:
    missing = [f for f, v in (("--accelerator-type", args.accelerator_type), ("--version", args.version)) if not v]
    if missing:
      parser.error(f"--create needs {' and '.join(missing)}")
  cmds = commands(args, train_args)
  if args.dry_run:
    print("\n".join(shell(c) for c in cmds))
    return 0
  status = 0
  for i, cmd in enumerate(cmds):
    print(f"+ {shell(cmd)}", flush=True)
    is_delete = args.delete_after and i == len(cmds) - 1
    if status and not is_delete:
      continue  # after a failure, only the slice's deletion still runs
    code = subprocess.call(cmd)
    status = status or code
  return status


if __name__ == "__main__":
  sys.exit(main())
