"""The next-token family (`config.task = 'next_token'`): LlamaGen's raster-order model over a VQ / LFQ grid.

Owns: this file, `ar_gen/models/next_token.py` (the model, which is also its sampler step contract),
`configs/mnist_next_token.py`, `configs/imagenet256_llamagen.py:size=S`; `default_config` below is its config with
every key, `imagenet_llamagen_config` LlamaGen's ImageNet recipe. Shares the discrete-token task (`_discrete.py`)
with the next-scale family.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from flax import nnx

from ar_gen.config import IMAGENET_TRAIN_EXAMPLES, ConfigError, base_config, num_steps, parse_arg
from ar_gen.decoding import speculative_sampling
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.decoding.speculative_rules import CategoricalRule
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
                bench_steps=bench_steps, order=0,
                bench_sampling=SamplingConfig(top_k=2000, cfg_scale=2.0))  # LlamaGen's sample_c2i, GPT-B's cfg


def default_config(tokenizer_workdir: str, **data) -> ml_collections.ConfigDict:
  """A next-token training config with every key and its default (configs/*.py start from it).

  frozen.tokenizer: the tokenizer's work directory (or a configs/X.py file for shapes only: `ar-gen compile`).
  model: `size` (B, L, XL, XXL, 3B: LlamaGen's presets; or 'custom' with depth, dim, num_heads), class / token
  dropout, `dropout` of the blocks' attention and MLP outputs, `label_smoothing` of the targets (DiGIT's stage 1:
  0.1), QK-norm, attention implementation. sample: the sampling defaults of `ar-gen sample` and of the
  training-time sample grids.
  """
  c = base_config(**data)
  c.task = "next_token"
  c.frozen = ml_collections.ConfigDict(dict(tokenizer=tokenizer_workdir))
  c.model = ml_collections.ConfigDict(dict(
      size="B", depth=12, dim=768, num_heads=12, num_kv_heads=0, mlp_multiple_of=256, num_classes=1000,
      class_dropout=0.1, token_dropout=0.1, dropout=0.0, label_smoothing=0.0, qk_norm=False, attn_impl="auto",
      rope_base=10000.0, norm_eps=1e-5, dtype="float32", param_dtype="float32"))
  c.sample = ml_collections.ConfigDict(dict(
      temperature=1.0, top_k=0, top_p=1.0, cfg_scale=2.0, cfg_schedule="constant", cfg_interval=(0.0, 1.0)))
  c.optimizer.update(lr=1e-4, weight_decay=0.05, b1=0.9, b2=0.95)
  return c


# LlamaGen's guidance scale per size, as its sampling commands for the headline FIDs pass it (GETTING_STARTED.md:45-53,
# FoundationVision/LlamaGen@ce98ec4); XXL and 3B train with FSDP (GETTING_STARTED.md:34-40, train_c2i_fsdp.py).
LLAMAGEN_CFG_SCALES = {"B": 2.0, "L": 2.0, "XL": 1.75, "XXL": 1.75, "3B": 1.65}
LLAMAGEN_FSDP_SIZES = ("XXL", "3B")


def imagenet_llamagen_config(arg=None) -> ml_collections.ConfigDict:
  """LlamaGen-`size` on ImageNet 256 (configs/imagenet256_llamagen.py:size=S), the defaults of LlamaGen's
  autoregressive/train/train_c2i.py: batch 256, 300 epochs, AdamW (0.9, 0.95) at a constant lr 1e-4 (no warmup, no
  decay), weight decay 0.05, grad clip 1, class / token / block dropout 0.1, bf16, no EMA; 16 x 16 tokens of the VQ-16
  tokenizer `tokenizer` (a work directory of configs/imagenet256_vq16.py or `ar-gen convert-llamagen`'s). What
  differs from LlamaGen's code (it trains on pre-extracted ten-crop codes): docs/recipes.md."""
  arg = parse_arg(arg, size=None, runlocal=False, tokenizer="runs/imagenet256_vq16")
  if arg.size not in LLAMAGEN_CFG_SCALES:
    raise ConfigError(f"imagenet256_llamagen.py needs :size=S with S one of LlamaGen's sizes "
                      f"{list(LLAMAGEN_CFG_SCALES)}, got {'no size' if arg.size is None else f'size={arg.size!r}'}")
  c = default_config(arg.tokenizer, train="tfds:imagenet2012:train", eval="tfds:imagenet2012:validation",
                     image_size=256, channels=3, resize="crop", random_flip=True)
  c.batch_size = 256
  c.total_steps = num_steps(epochs=300, batch_size=c.batch_size, dataset_size=IMAGENET_TRAIN_EXAMPLES)
  c.log_every_steps = 100
  c.ckpt_every_steps = c.vis_every_steps = 5000
  c.optimizer.update(lr=1e-4, warmup_steps=0, end_lr_factor=1.0, weight_decay=0.05, b1=0.9, b2=0.95, grad_clip=1.0)
  c.model.update(size=arg.size, num_classes=1000, class_dropout=0.1, token_dropout=0.1, dropout=0.1, dtype="bfloat16")
  c.sample.update(cfg_scale=LLAMAGEN_CFG_SCALES[arg.size], cfg_schedule="constant", top_k=0, top_p=1.0,
                  temperature=1.0)
  if arg.size in LLAMAGEN_FSDP_SIZES:
    c.mesh.update(data=1, fsdp=-1)
  if arg.runlocal:
    c.update(total_steps=1, batch_size=2, log_every_steps=1, ckpt_every_steps=1, vis_every_steps=1, vis_examples=2)
    c.data.update(image_size=64, num_threads=1)
    c.mesh.update(data=-1, fsdp=1)
    c.model.update(size="custom", depth=2, dim=64, num_heads=2, mlp_multiple_of=32, dtype="float32")
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

  def check_speculation(self, how: speculative_sampling.Speculation, draft_task) -> None:
    if not how.jacobi:
      self.check_draft(draft_task, "--draft-workdir")

  def speculative_tokens(self, model, draft, draft_task, cond, rng, frozen, cfg, how, valid_B=None):
    """Draft-and-verify with the draft run's model, or speculative Jacobi decoding (`how.jacobi`)."""
    del draft_task, frozen
    prefill = how.prefill_tokens(self.layout.num_tokens)
    if how.jacobi:
      return speculative_sampling.sample_jacobi(model, cond, rng, cfg, how.gamma, prefill, valid_B)
    return speculative_sampling.sample(model, draft, cond, rng, CategoricalRule(cfg), how.gamma, prefill, valid_B)
