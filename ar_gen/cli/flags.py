"""What every `ar-gen` subcommand module shares: the `Command` record and the flags several commands take."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Command:
  """One subcommand."""

  name: str
  help: str
  arguments: Callable[[argparse.ArgumentParser], None]
  run: Callable[[argparse.Namespace, list[str]], None]
  overrides: bool = False  # accepts --config.KEY=VALUE
  description: str | None = None


def distributed_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 for a multi-process run "
                 "(default: $AR_GEN_COORDINATOR, or found by JAX under SLURM and on TPU pods)")
  p.add_argument("--num-processes", type=int, default=None, help="with --coordinator: the number of processes")
  p.add_argument("--process-id", type=int, default=None, help="with --coordinator: this process's index")


def initialize_distributed(args) -> None:
  from ar_gen import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize_distributed(args.coordinator, args.num_processes, args.process_id)


def ints(text: str, flag: str) -> tuple[int, ...]:
  try:
    return tuple(int(x) for x in text.split(",") if x)
  except ValueError:
    raise ValueError(f"{flag} takes comma-separated integers, got {text!r}") from None


def shapes(text: str) -> tuple[tuple[int, ...], ...]:
  shapes = tuple(ints(s.replace("x", ","), "--shapes") for s in text.split(",") if s)
  if not shapes or any(len(s) != 4 for s in shapes):
    raise ValueError(f"--shapes takes BxHxLxD shapes separated by commas, e.g. 8x16x680x64; got {text!r}")
  return shapes


def overwrite_flag(p: argparse.ArgumentParser, what: str) -> None:
  p.add_argument("--overwrite", action="store_true", help=f"replace {what} (else refused)")
