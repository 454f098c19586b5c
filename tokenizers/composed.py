"""The task of a composed tokenizer: a work directory that an `ar-gen` command assembles from trained runs (a VQ
and its cluster table, an encoder and its k-means centroids), never trained itself.

A subclass names its module (`build`), its picture and the command that makes it (`made_by`); `ar-gen train`
refuses the run with that command in the message, and other runs read the module as a frozen tokenizer.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from flax import nnx

from ar_gen.errors import UserError


class ComposedTokenizerTask:
  """What every composed tokenizer's task shares (subclass: `build`, `visualize`, `picture`, `made_by`)."""

  exports = "tokenizer"
  made_by = ""  # the command that writes such a work directory

  def __init__(self, config: ml_collections.ConfigDict, frozen: dict[str, Any]):
    self.config, self.frozen = config, frozen

  def build(self, rngs: nnx.Rngs) -> nnx.Module:
    raise NotImplementedError

  def export(self, model: nnx.Module) -> nnx.Module:
    return model

  def check_source(self, source: Any) -> None:
    del source
    raise UserError(f"a {self.config.task} is not trained: `{self.made_by}` makes it")

  def prepare(self, batch: dict, frozen: Any) -> dict:
    del frozen
    return batch

  def loss(self, model, batch, rng, step, frozen):
    raise UserError(f"a {self.config.task} has no loss (made by `{self.made_by}`)")

  def post_update(self, model, extras, rng, step) -> dict:
    return {}

  def summarize(self, window) -> dict:
    return {}
