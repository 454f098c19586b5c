"""The next-token family (`config.task = 'next_token'`): LlamaGen's raster-order model over a VQ / LFQ grid.

Owns: this file, `ar_gen/models/next_token.py` (the model, which is also its sampler step contract),
`configs/mnist_next_token.py`; `default_config` below is its config with every key. Shares the discrete-token
task (`_discrete.py`) with the next-scale family.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from flax import nnx

from ar_gen.config import base_config
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


def default_config(tokenizer_workdir: str, **data) -> ml_collections.ConfigDict:
  """A next-token training config with every key and its default (configs/*.py start from it).

  frozen.tokenizer: the tokenizer's work directory (or a configs/X.py file for shapes only: `ar-gen compile`).
  model: `size` (B, L, XL, XXL: LlamaGen's presets; or 'custom' with depth, dim, num_heads), class / token
  dropout, QK-norm, attention implementation. sample: the sampling defaults of `ar-gen sample` and of the
  training-time sample grids.
  """
  c = base_config(**data)
  c.task = "next_token"
  c.frozen = ml_collections.ConfigDict(dict(tokenizer=tokenizer_workdir))
  c.model = ml_collections.ConfigDict(dict(
      size="B", depth=12, dim=768, num_heads=12, num_kv_heads=0, mlp_multiple_of=256, num_classes=1000,
      class_dropout=0.1, token_dropout=0.1, qk_norm=False, attn_impl="auto", rope_base=10000.0, norm_eps=1e-5,
      dtype="float32", param_dtype="float32"))
  c.sample = ml_collections.ConfigDict(dict(
      temperature=1.0, top_k=0, top_p=1.0, cfg_scale=2.0, cfg_schedule="constant", cfg_interval=(0.0, 1.0)))
  c.optimizer.update(lr=1e-4, weight_decay=0.05, b1=0.9, b2=0.95)
  return c


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
