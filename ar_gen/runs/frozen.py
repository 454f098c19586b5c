"""Frozen components: trained runs that another run reads but does not train, declared by name in the config.

`config.frozen` maps a name to a source: the tokenizer of an AR model now (`frozen.tokenizer`); a stage-1 model, a
draft model or a pixel decoder later. A source is a trained work directory, or a config file (`configs/X.py[:ARGS]`)
or a work directory without a checkpoint when only shapes are needed (`ar-gen compile`). This module is the one
place that loads them: `load_all(config)` gives {name: FrozenComponent} with real weights (EMA if kept), or with
`abstract=True` only their shapes. The component's module is what the source run's task exports (the tokenizer of
a tokenizer run, the model of an AR run); its state is an argument of the jitted functions, never trained.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ml_collections
from flax import nnx

from ar_gen import config as config_lib, fileio

log = logging.getLogger("ar_gen.runs")


@dataclasses.dataclass
class FrozenComponent:
  """A frozen module: its source, the source run's config, what it is (its task's `exports`: 'tokenizer',
  'generator', 'classifier'), graph definition, state (or shapes) and step; `frozen_identities`: the `identity` of
  each of the source run's own frozen components (e.g. the tokenizer a stage-1 model was trained on)."""

  name: str
  source: str
  config: ml_collections.ConfigDict
  exports: str
  graphdef: Any
  state: Any
  step: int | None
  frozen_identities: dict = dataclasses.field(default_factory=dict)

  def module(self, state: Any = None) -> nnx.Module:
    """The module with `state` (inside traced code: the `frozen[name]` argument) or the loaded one."""
    return nnx.merge(self.graphdef, self.state if state is None else state)

  @property
  def identity(self) -> dict:
    """What names these weights: the source run's config fingerprint and step (and, for people, its path)."""
    return {"workdir": fileio.absolute(self.source), "step": self.step,
            "fingerprint": config_lib.fingerprint(self.config)}

  def check_identity(self, recorded: dict | None, what: str, mine: dict | None = None) -> None:
    """Raises naming both if `recorded` (an `identity` written by an earlier job, e.g. into a token set's
    meta.json) is not this component's weights (or `mine`, weights this component holds a copy of)."""
    mine = mine or self.identity
    if recorded and "fingerprint" not in recorded and recorded.get("workdir"):  # written before fingerprints
      if (fileio.absolute(recorded["workdir"]), recorded.get("step")) == (mine["workdir"], mine["step"]):
        log.warning("%s names its tokenizer by path and step only (an older ar-gen); they match frozen.%s", what,
                    self.name)
        return
    if not recorded or "fingerprint" not in recorded:
      raise ValueError(f"{what} does not say which tokenizer made it, or names another one by path and step: "
                       f"extract it again with `ar-gen extract-tokens --workdir {mine['workdir']} ...`")
    if (recorded["fingerprint"], recorded.get("step")) != (mine["fingerprint"], mine["step"]):
      own = mine == self.identity
      expected = (f"frozen.{self.name} is {mine['workdir']}" if own else
                  f"frozen.{self.name}={self.source!r} reads the tokens of {mine['workdir']}")
      other = f", or point frozen.{self.name} at the tokenizer that made them" if own else ""
      raise ValueError(f"{what} was made by the tokenizer {recorded.get('workdir')} at step {recorded.get('step')} "
                       f"(config {recorded['fingerprint']}), but {expected} at step {mine['step']} (config "
                       f"{mine['fingerprint']}): extract the tokens again with `ar-gen extract-tokens --workdir "
                       f"{mine['workdir']} ... --overwrite`{other}")

  @property
  def layout(self):
    """The component's token layout (a tokenizer's, or the layout an AR model generates)."""
    return self.module().layout

  def check_exports(self, wanted: str) -> None:
    """Raises naming the source if this component is not a `wanted` (e.g. an AR run given as frozen.tokenizer)."""
    if self.exports != wanted:
      raise ValueError(f"frozen.{self.name}={self.source!r} holds a {self.config.task!r} run, which gives a "
                       f"{self.exports}, not a {wanted}")

  def check_data(self, data: ml_collections.ConfigDict) -> None:
    """The reading run's images must be prepared as this component's were."""
    for key in ("image_size", "channels", "resize"):
      if data[key] != self.config.data[key]:
        raise ValueError(f"data.{key}={data[key]!r} differs from frozen.{self.name}'s ({self.config.data[key]!r}, "
                         f"{self.source})")


def _source_config(name: str, source: str) -> tuple[ml_collections.ConfigDict, bool]:
  """(the source's config, whether it has weights on disk)."""
  if not source:
    raise ValueError(f"frozen.{name} is empty: set it to the work directory of a trained run")
  spec_file = source.partition(":")[0]
  if spec_file.endswith(".py"):
    return config_lib.load_config(source), False
  if not fileio.isfile(fileio.join(source, "config.json")):
    raise FileNotFoundError(f"frozen.{name}={source!r}: no config.json there (a trained work directory, or a "
                            "configs/X.py file for shapes only)")
  return config_lib.load_workdir_config(source), True


def load(name: str, source: str, abstract: bool = False) -> FrozenComponent:
  """The frozen component `name` from `source` (real weights unless `abstract`)."""
  from ar_gen.runs import run as run_lib  # pylint: disable=g-import-not-at-top  # run.py loads frozen components
  config, has_weights = _source_config(name, source)
  if abstract:
    run = run_lib.Run(config, abstract_frozen=True)
    module = nnx.eval_shape(lambda: run.task.export(run.task.build(nnx.Rngs(0))))
    graphdef, state = nnx.split(module)
    return FrozenComponent(name, source, config, run.task.exports, graphdef, state, None)
  if not has_weights:
    raise ValueError(f"frozen.{name}={source!r} is a config file: it has no weights to load (train it first)")
  run, state, step = run_lib.restore_run(source)
  graphdef, module_state = nnx.split(run.task.export(run.model(state)))
  return FrozenComponent(name, source, config, run.task.exports, graphdef, module_state, step,
                         {n: c.identity for n, c in run.frozen.items()})


def load_all(config: ml_collections.ConfigDict, abstract: bool = False) -> dict[str, FrozenComponent]:
  """Every component of `config.frozen` that is set (none if the config has no such section); an empty entry is
  not given, and the task says whether it needs it (e.g. stage 2 of coarse-to-fine trains without its stage 1)."""
  sources = config.get("frozen") or {}
  return {name: load(name, str(source), abstract) for name, source in sources.items() if str(source)}
