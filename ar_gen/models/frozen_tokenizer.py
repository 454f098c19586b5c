"""A trained tokenizer used read-only by an AR model: loaded from its work directory, passed as a pytree.

AR tasks keep the tokenizer's state as `task.frozen` (an argument of the jitted step, never trained) and rebuild
the module inside traced code with `FrozenTokenizer.module(state)`.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from ar_gen.train import trainer


class FrozenTokenizer:
  """The tokenizer of `workdir` (EMA weights if kept): graph definition, state, config and grid."""

  def __init__(self, workdir: str):
    if not workdir:
      raise ValueError("tokenizer_workdir is empty: set it to the work directory of a trained tokenizer")
    run, state, self.step = trainer.restore_run(workdir)
    if run.config.task != "tokenizer":
      raise ValueError(f"{workdir} holds a {run.config.task!r} run, not a tokenizer")
    tokenizer = run.model(state).tokenizer
    self.workdir, self.config = workdir, run.config
    self.graphdef, self.state = nnx.split(tokenizer)
    self.codebook_size = tokenizer.codebook_size
    self.grid = tokenizer.grid_shape(run.config.data.image_size)
    self.token_shape = tokenizer.token_shape(run.config.data.image_size)

  def module(self, state: Any = None):
    return nnx.merge(self.graphdef, self.state if state is None else state)

  def check_data(self, data: ml_collections.ConfigDict) -> None:
    """The AR model's images must be prepared as the tokenizer's were."""
    for key in ("image_size", "channels", "resize"):
      if data[key] != self.config.data[key]:
        raise ValueError(f"data.{key}={data[key]!r} differs from the tokenizer's ({self.config.data[key]!r}, "
                         f"{self.workdir}/config.json)")

  @property
  def num_tokens(self) -> int:
    return int(np.prod(self.token_shape))

  def encode_flat(self, state: Any, images_BHWC: jax.Array) -> jax.Array:
    """Token ids [B, N] (raster order; scale by scale for a multi-scale tokenizer)."""
    indices = self.module(state).encode(images_BHWC)
    return indices.reshape(indices.shape[0], -1)

  def decode_flat(self, state: Any, tokens_BN: jax.Array) -> jax.Array:
    """Images [B, H, W, C] from flat token ids [B, N]."""
    return self.module(state).decode_indices(tokens_BN.reshape(tokens_BN.shape[0], *self.token_shape))
