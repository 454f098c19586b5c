"""The next-token family (`config.task = 'next_token'`): LlamaGen's raster-order model over a VQ / LFQ grid.

Owns: this file, `ar_gen/models/next_token.py` (the model, which is also its sampler step contract),
`configs/mnist_next_token.py`. Shares the discrete-token task (`_discrete.py`) with the next-scale family.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from ar_gen.families._discrete import DiscreteTokenTask
from ar_gen.families._registry import BenchSpec, Family
from ar_gen.layout import TokenLayout
from ar_gen.models.next_token import NextTokenModel, build_next_token


def bench_steps(spec: BenchSpec) -> NextTokenModel:
  """A random-weight model of the bench's size over the grid (LlamaGen's blocks)."""
  return NextTokenModel(TokenLayout.raster(spec.grid, spec.vocab_size), spec.num_classes, spec.depth, spec.dim,
                        spec.num_heads, rngs=nnx.Rngs(0))


FAMILY = Family("next_token", demo_config="mnist_next_token.py", demo_tokenizer="tokenizer_vq",
                demo_tokenizer_config="mnist_vq.py", description="next-token (LlamaGen): one token per step",
                bench_steps=bench_steps, order=0)


class Task(DiscreteTokenTask):
  """Class-conditional next-token prediction over a frozen tokenizer's one-map layout."""

  def build(self, rngs: nnx.Rngs) -> NextTokenModel:
    return build_next_token(self.config.model, self.layout, rngs)

  def logits(self, model: NextTokenModel, tokens_BL: jax.Array, labels_B: jax.Array, rng: jax.Array,
             frozen: Any) -> jax.Array:
    del frozen
    return model(tokens_BL, labels_B, train=True, rng=rng)

  def steps(self, model: NextTokenModel, frozen: Any) -> NextTokenModel:
    del frozen
    return model
