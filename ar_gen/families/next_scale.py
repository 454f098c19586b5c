"""The next-scale family (`config.task = 'next_scale'`): VAR's model over a residual quantizer's maps.

Owns: this file (with `default_config` and VAR's ImageNet recipe `imagenet_var_config`), `ar_gen/models/next_scale.py`
(the model), `configs/mnist_var.py`, `configs/imagenet256_var.py:depth=N`.
The model's inputs of map k > 0 come from the frozen tokenizer's residual quantizer (`ResidualQuantizer`:
accumulate the tokens of the maps before k, downsample to map k): in teacher forcing all at once
(`teacher_inputs`), in sampling group by group through `ResidualSteps`, the step contract that composes the model
with the quantizer. Any residual quantizer (multi-scale now, frequency bands next) works unchanged.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from flax import nnx

from ar_gen.conditioning import null_class_labels
from ar_gen.config import IMAGENET_TRAIN_EXAMPLES, ConfigError, base_config, parse_arg
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.families._discrete import DiscreteTokenTask, mnist_config
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
    return null_class_labels(cond, self.model.num_classes)

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


def default_config(tokenizer_workdir: str, **data) -> ml_collections.ConfigDict:
  """A next-scale (VAR) training config with every key and its default (configs/*.py start from it).

  frozen.tokenizer: the work directory of a tokenizer with a residual quantizer (model.quantizer='multiscale').
  model: VAR's `depth` d (width 64 d and d heads unless `dim` / `num_heads` are set), MLP ratio, class dropout,
  drop-path rate of the last block (`drop_path`), the AdaLN gates' init scale (`adaln_gate_init`, VAR's `alng`),
  attention implementation. sample: VAR's defaults: guidance ramped linearly over the scales (`cfg_scale` 1 +
  VAR's cfg), top-k 900, top-p 0.96.
  """
  c = base_config(**data)
  c.task = "next_scale"
  c.frozen = ml_collections.ConfigDict(dict(tokenizer=tokenizer_workdir))
  c.model = ml_collections.ConfigDict(dict(
      depth=16, dim=0, num_heads=0, mlp_ratio=4.0, num_classes=1000, class_dropout=0.1, drop_path=0.0,
      adaln_gate_init=1e-5, attn_impl="auto", norm_eps=1e-6, dtype="float32", param_dtype="float32"))
  c.sample = ml_collections.ConfigDict(dict(
      temperature=1.0, top_k=900, top_p=0.96, cfg_scale=2.5, cfg_schedule="linear", cfg_interval=(0.0, 1.0)))
  c.optimizer.update(lr=1e-4 * 768 / 256, weight_decay=0.05, b1=0.9, b2=0.95)  # VAR's defaults: --tblr 1e-4, --bs 768
  return c


# VAR's recipe per depth, from the training commands of its README (README.md:133-143, FoundationVision/VAR@78b9539):
# global batch (--bs), base lr per 256 images (--tblr), epochs (--ep), final lr ratio (--wpe), init scale of the AdaLN
# gates (--alng). d30's --twde=0.08 (weight decay ramped from 0.05 to 0.08) is not followed: docs/recipes.md.
VAR_RECIPES = {
    16: dict(batch_size=768, base_lr=1e-4, epochs=200, end_lr_factor=0.1, adaln_gate_init=1e-3),
    20: dict(batch_size=768, base_lr=1e-4, epochs=250, end_lr_factor=0.1, adaln_gate_init=1e-3),
    24: dict(batch_size=768, base_lr=8e-5, epochs=350, end_lr_factor=0.01, adaln_gate_init=1e-4),
    30: dict(batch_size=1024, base_lr=8e-5, epochs=350, end_lr_factor=0.01, adaln_gate_init=1e-5),
}


def var_steps_per_epoch(batch_size: int) -> int:
  """VAR's iterations per epoch: its sampler fills the last batch, so ceil(N / B) (utils/data_sampler.py:75)."""
  return -(-IMAGENET_TRAIN_EXAMPLES // batch_size)


def imagenet_var_config(arg=None) -> ml_collections.ConfigDict:
  """VAR-d`depth` on ImageNet 256 (configs/imagenet256_var.py:depth=N, N in VAR_RECIPES), VAR's recipe: AdamW (0.9,
  0.95), weight decay 0.05, lr = base lr x batch / 256, warmup 2% of training, then the lr held 5% and decayed
  linearly to `end_lr_factor` (VAR's `lin0`), grad clip 2, class dropout 0.1, drop-path 0.1 d / 24, no flips, no EMA;
  bf16 compute (VAR: fp16), FSDP over all devices for d24+. What differs from VAR's code: docs/recipes.md."""
  arg = parse_arg(arg, depth=None, runlocal=False, tokenizer="runs/imagenet256_var_tok")
  depth = arg.depth
  if not (isinstance(depth, int) and not isinstance(depth, bool) and depth in VAR_RECIPES):
    raise ConfigError(f"imagenet256_var.py needs :depth=N with N one of VAR's depths {sorted(VAR_RECIPES)}, "
                      f"got {'no depth' if depth is None else f'depth={depth!r}'}")
  return recipe_config(depth, VAR_RECIPES[depth], arg.tokenizer, arg.runlocal)


def recipe_config(depth: int, recipe: dict, tokenizer: str, runlocal: bool) -> ml_collections.ConfigDict:
  """A VAR-style ImageNet 256 config of `depth` under `recipe` (a `VAR_RECIPES` row; next-frequency uses it too)."""
  c = default_config(tokenizer, train="tfds:imagenet2012:train", eval="tfds:imagenet2012:validation",
                     image_size=256, channels=3, resize="crop", random_flip=False)
  c.batch_size = recipe["batch_size"]
  c.total_steps = recipe["epochs"] * var_steps_per_epoch(c.batch_size)
  c.log_every_steps = 100
  c.ckpt_every_steps = c.vis_every_steps = 5000
  c.optimizer.update(lr=recipe["base_lr"] * c.batch_size / 256, warmup_steps=c.total_steps // 50, schedule="linear",
                     hold_fraction=0.05, end_lr_factor=recipe["end_lr_factor"], weight_decay=0.05, b1=0.9, b2=0.95,
                     grad_clip=2.0)
  c.model.update(depth=depth, num_classes=1000, class_dropout=0.1, drop_path=0.1 * depth / 24,
                 adaln_gate_init=recipe["adaln_gate_init"], dtype="bfloat16")
  if depth >= 24:
    c.mesh.update(data=1, fsdp=-1)
  if runlocal:
    c.update(total_steps=1, batch_size=2, log_every_steps=1, ckpt_every_steps=1, vis_every_steps=1, vis_examples=2)
    c.data.update(image_size=64, num_threads=1)
    c.mesh.update(data=-1, fsdp=1)
    c.model.update(depth=2, dim=64, num_heads=2, dtype="float32")
  return c


def mnist_var_config(c: ml_collections.ConfigDict, steps: int, runlocal: bool) -> ml_collections.ConfigDict:
  """The MNIST next-scale generator of configs/mnist_var.py (4 blocks, width 96, guidance 2 ramped) over any
  residual tokenizer's `c`: configs/mnist_nfig.py shares it, so the demo's next_scale and next_frequency stages
  differ only in the quantizer's targets."""
  c = mnist_config(c, steps, runlocal)
  c.model.update(depth=4, dim=96, num_heads=3, num_classes=10, class_dropout=0.1)
  c.sample.update(cfg_scale=2.0, top_k=0, top_p=1.0, temperature=1.0)
  return c


def bench_steps(spec: BenchSpec, quantizer_class: type = MultiScaleQuantizer) -> "ResidualSteps":
  """A random-weight VAR model of the bench's depth / width / heads over a residual quantizer's maps (`spec.scales`)."""
  quantizer = quantizer_class(spec.vocab_size, BENCH_CODE_DIM, spec.scales, rngs=nnx.Rngs(0))
  model = NextScaleModel(quantizer.layout, BENCH_CODE_DIM, spec.num_classes, spec.depth, spec.dim, spec.num_heads,
                         rngs=nnx.Rngs(0))
  return ResidualSteps(model, quantizer)


FAMILY = Family("next_scale", demo_config="mnist_var.py", demo_tokenizer="tokenizer_var",
                demo_tokenizer_config="mnist_var_tok.py", description="next-scale (VAR): one scale per step",
                bench_steps=bench_steps, order=1,  # VAR's cfg=1.5 ramped, top_k=900, top_p=0.96:
                bench_sampling=SamplingConfig(top_k=900, top_p=0.96, cfg_scale=2.5, cfg_schedule="linear"))


class Task(DiscreteTokenTask):
  """Class-conditional next-scale prediction over a frozen residual quantizer's maps."""

  def __init__(self, config, frozen):
    super().__init__(config, frozen)
    if self.layout.group_by != "map":
      raise ValueError(f"task next_scale needs a tokenizer whose layout has one AR step per map (a multi-scale "
                       f"tokenizer, model.quantizer='multiscale'); {self.tokenizer.source} gives "
                       f"{self.layout.describe()}: use task next_token")

  def quantizer(self, frozen: Any) -> ResidualQuantizer:
    """The frozen tokenizer's (a `QuantizedTokenizer`'s) residual quantizer, with `frozen`'s state if given."""
    return self.tokenizer_module(frozen).quantizer

  def build(self, rngs: nnx.Rngs) -> NextScaleModel:
    return build_next_scale(self.config.model, self.layout, self.quantizer(None).code_dim, rngs)

  def logits(self, model: NextScaleModel, tokens_BL: jax.Array, labels_B: jax.Array, rng: jax.Array,
             frozen: Any) -> jax.Array:
    return model(self.quantizer(frozen).teacher_inputs(tokens_BL), labels_B, train=True, rng=rng)

  def steps(self, model: NextScaleModel, frozen: Any) -> ResidualSteps:
    return ResidualSteps(model, self.quantizer(frozen))
