"""What a family declares besides its task: its demo stage and its benchmark, collected by `registered()`.

A family module `ar_gen/families/NAME.py` sets `FAMILY = Family(...)`; the demo runs a stage per family (training
its frozen tokenizer's config first, then the family's MNIST config on extracted tokens) and `ar-gen bench sample`
times each family's sampler. Nothing else lists families: adding one is adding its module.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from ar_gen.runs.task import FAMILIES_PACKAGE, family_names


@dataclasses.dataclass(frozen=True)
class Family:
  """A family's declarations.

  demo_config: its CPU-sized config in configs/ (trained by the demo on MNIST tokens).
  demo_tokenizer: the demo stage name of its frozen tokenizer (e.g. 'tokenizer_vq').
  demo_tokenizer_config: that tokenizer's config in configs/.
  description: one line for tables.
  bench_steps: `ar-gen bench sample`'s builder: `bench_steps(spec)` -> the family's sampler step contract with
    random weights for a `BenchSpec`.
  bench_sampling: the sampling settings its official code samples with (guidance on); the bench times them with
    guidance on and off.
  bench_sampler: `bench_sampler(steps, labels_B, rng, cfg) -> tokens`, how the bench samples the family's tokens
    (default: the driver with the categorical head); a family with its own head or condition sets it, and then the
    bench reports no machine limit for it unless `bench_limit` (XLA counts an inner loop's flops once).
  demo_group: a demo stage name that runs this family's stage with the others of the group (e.g. 'continuous').
  sampler_steps: `sampler_steps(config, layout) -> int`, the transformer steps its sampler takes per image under a
    run's config (a dict, as in config.json) and token layout (the demo's 'AR steps/image'); None: one per group of
    the layout.
  demo_prelude: `demo_prelude(workdir, train_args) -> DemoPrelude`, the jobs its demo stage runs before its own
    training (e.g. coarse-to-fine's clustered tokenizer and stage-1 run); `workdir(name)` is the path of OUT/name,
    `train_args(config_file, workdir, overrides)` the arguments of an `ar-gen train` of a configs/ file.
  """

  name: str
  demo_config: str
  demo_tokenizer: str
  demo_tokenizer_config: str
  description: str
  bench_steps: Callable[["BenchSpec"], Any]
  bench_sampling: Any = None  # a SamplingConfig
  order: int = 100  # position in tables (next-token first)
  bench_sampler: Callable[..., Any] | None = None
  bench_limit: bool = True
  bench_diffusion_steps: int = 0  # a diffusion head's respaced steps per token (reported beside the AR steps)
  in_make_demo: bool = True  # False: its demo stage runs under `ar-gen demo --stages all` only (time budget)
  demo_group: str = ""
  sampler_steps: Callable[[dict, Any], int] | None = None
  demo_prelude: Callable[..., "DemoPrelude"] | None = None


@dataclasses.dataclass(frozen=True)
class DemoPrelude:
  """Jobs a family's demo stage runs before its training: `jobs` (name, `ar-gen` arguments, the jobs it waits
  for) each, the `results` they write (names under OUT), `overrides` {key: value} of the family's training config
  and the jobs that training waits for (`after`)."""

  jobs: tuple[tuple[str, list[str], tuple[str, ...]], ...]
  results: tuple[str, ...]
  overrides: dict[str, str]
  after: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BenchSpec:
  """The shared size of the models `ar-gen bench sample` compares: transformer depth / width / heads, the token
  grid, the vocabulary, the classes, and the scales a multi-map family uses (ending at the grid's side)."""

  depth: int
  dim: int
  num_heads: int
  grid: tuple[int, int]
  vocab_size: int
  num_classes: int
  scales: tuple[int, ...]


def registered() -> dict[str, Family]:
  """{name: Family} of every family module, in the families' declared `order` (then by name)."""
  families = [importlib.import_module(f"{FAMILIES_PACKAGE}.{name}").FAMILY for name in family_names()]
  return {f.name: f for f in sorted(families, key=lambda f: (f.order, f.name))}
