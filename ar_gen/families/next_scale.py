"""The next-scale family (`config.task = 'next_scale'`): VAR's model over a residual quantizer's maps.

Owns: this file, `ar_gen/models/next_scale.py` (the model), `configs/mnist_var.py`, `configs/imagenet256_var.py`.
The model's inputs of map k > 0 come from the frozen tokenizer's residual quantizer (`ResidualQuantizer`:
accumulate the tokens of the maps before k, downsample to map k): in teacher forcing all at once
(`teacher_inputs`), in sampling group by group through `ResidualSteps`, the step contract that composes the model
with the quantizer. Any residual quantizer (multi-scale now, frequency bands next) works unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ar_gen.families._discrete import DiscreteTokenTask
from ar_gen.families._registry import BenchSpec, Family
from ar_gen.layout import TokenLayout
from ar_gen.models.next_scale import NextScaleModel, build_next_scale
from ar_gen.nn.transformer import Cache
from tokenizers.multiscale import MultiScaleQuantizer
from tokenizers.protocol import ResidualQuantizer

BENCH_CODE_DIM = 32  # VAR's VQVAE


class ResidualSteps(nnx.Module):
  """The sampler's step contract of a next-scale model over a residual quantizer (a module, so it can be split and
  passed through `jit` like any model).

  Context: the class embedding [B, C] (AdaLN); carry: (embedded inputs of the next map [B, l, C], the features
  accumulated so far f_hat [B, h, w, D]).
  """

  def __init__(self, model: NextScaleModel, quantizer: ResidualQuantizer):
    self.model, self.quantizer = model, quantizer

  @property
  def layout(self) -> TokenLayout:
    return self.model.layout

  def null_condition(self, cond: dict) -> dict:
    return {"label": jnp.full_like(cond["label"], self.model.num_classes)}

  def begin(self, cond: dict) -> tuple[jax.Array, tuple[jax.Array, jax.Array], Cache]:
    labels_B = cond["label"]
    cond_BD = self.model.condition(labels_B)
    carry = (self.model.first_inputs(cond_BD), self.quantizer.initial_features(labels_B.shape[0]))
    return cond_BD, carry, self.model.init_cache(labels_B.shape[0])

  def step(self, carry, group: int, cache: Cache, context: jax.Array) -> tuple[jax.Array, Cache]:
    return self.model.step(carry[0], group, cache, context)

  def feed(self, tokens_Bl: jax.Array, group: int, carry, context: jax.Array):
    del context
    if group + 1 == self.layout.num_groups:
      return carry
    f_hat_BhwD = self.quantizer.accumulate(carry[1], group, tokens_Bl)
    return self.model.scale_inputs(self.quantizer.next_inputs(f_hat_BhwD, group + 1), group + 1), f_hat_BhwD


def bench_steps(spec: BenchSpec) -> "ResidualSteps":
  """A random-weight VAR model of the bench's depth / width / heads over a multi-scale quantizer's scales."""
  quantizer = MultiScaleQuantizer(spec.vocab_size, BENCH_CODE_DIM, spec.scales, rngs=nnx.Rngs(0))
  model = NextScaleModel(quantizer.layout, BENCH_CODE_DIM, spec.num_classes, spec.depth, spec.dim, spec.num_heads,
                         rngs=nnx.Rngs(0))
  return ResidualSteps(model, quantizer)


FAMILY = Family("next_scale", demo_config="mnist_var.py", demo_tokenizer="tokenizer_var",
                demo_tokenizer_config="mnist_var_tok.py", description="next-scale (VAR): one scale per step",
                bench_steps=bench_steps, order=1)


class Task(DiscreteTokenTask):
  """Class-conditional next-scale prediction over a frozen residual quantizer's maps."""

  def __init__(self, config, frozen):
    super().__init__(config, frozen)
    if self.layout.group_by != "map":
      raise ValueError(f"task next_scale needs a tokenizer whose layout has one AR step per map (a multi-scale "
                       f"tokenizer, model.quantizer='multiscale'); {self.tokenizer.source} gives "
                       f"{self.layout.describe()}: use task next_token")

  def quantizer(self, frozen: Any) -> ResidualQuantizer:
    return self.tokenizer.module(None if frozen is None else frozen["tokenizer"]).quantizer

  def build(self, rngs: nnx.Rngs) -> NextScaleModel:
    return build_next_scale(self.config.model, self.layout, self.quantizer(None).code_dim, rngs)

  def logits(self, model: NextScaleModel, tokens_BL: jax.Array, labels_B: jax.Array, rng: jax.Array,
             frozen: Any) -> jax.Array:
    return model(self.quantizer(frozen).teacher_inputs(tokens_BL), labels_B, train=True, rng=rng)

  def steps(self, model: NextScaleModel, frozen: Any) -> ResidualSteps:
    return ResidualSteps(model, self.quantizer(frozen))
