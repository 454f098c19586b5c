"""What the launchers share: splitting `launcher args -- ar-gen train args`, checking the train args, printing."""

from __future__ import annotations

import argparse
import shlex


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
  """(launcher's own args, `ar-gen train` args after `--`)."""
  if "--" not in argv:
    return argv, []
  i = argv.index("--")
  return argv[:i], argv[i + 1:]


def check_train_args(parser: argparse.ArgumentParser, train_args: list[str]) -> None:
  """Refuses, by name, `ar-gen train` args that lack --config or --workdir."""
  if not train_args:
    parser.error("give the `ar-gen train` arguments after `--`, e.g. -- --config configs/mnist_vq.py "
                 "--workdir runs/x")
  for flag in ("--config", "--workdir"):
    if not any(a == flag or a.startswith(flag + "=") for a in train_args):
      parser.error(f"the `ar-gen train` arguments after `--` lack {flag}")


def shell(argv: list[str]) -> str:
  return shlex.join(argv)
