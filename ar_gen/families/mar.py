"""The continuous family (`config.task = 'mar'`): MAR's masked-order transformer, or its causal (raster, KV-cached)
variant with `model.order = 'raster'`, over a KL tokenizer's token vectors, each token sampled by the diffusion head.

Owns: this file, `ar_gen/models/mar.py`, `ar_gen/models/causal_continuous.py`, `configs/mnist_mar.py`
(`:order=raster` for the causal variant), `configs/imagenet256_mar.py:size=B|L|H`; the loss and the head are the
continuous task's (`_continuous.py`), the denoiser and its schedule `ar_gen/nn/diffusion*.py`, the tokenizer
`tokenizers/kl.py`. `default_config` below is the config with every key.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from flax import nnx

from ar_gen.config import IMAGENET_TRAIN_EXAMPLES, ConfigError, base_config, num_steps, parse_arg
from ar_gen.decoding import driver, speculative_sampling
from ar_gen.decoding.heads import DiffusionHead
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.decoding.speculative_rules import DiffusionRule
from ar_gen.errors import UserError
from ar_gen.families._continuous import ContinuousTokenTask
from ar_gen.families._discrete import mnist_config
from ar_gen.families._registry import BenchSpec, Family
from ar_gen.layout import TokenLayout
from ar_gen.models.causal_continuous import CausalContinuousModel
from ar_gen.models.mar import PRESETS, MARModel, MARSteps, in_grid_order, random_orders
from ar_gen.nn.diffusion import GaussianDiffusion
from tokenizers.model import dtype

ORDERS = ("masked", "raster")
BENCH_TOKEN_DIM = 16  # kl16's latent width
BENCH_STEPS, BENCH_DIFFUSION_STEPS = 64, 100  # MAR's sampling defaults (num_iter, num_sampling_steps)


def bench_layout(spec: BenchSpec) -> TokenLayout:
  return TokenLayout.raster(spec.grid, kind="vectors", token_dim=BENCH_TOKEN_DIM)


def bench_steps(spec: BenchSpec) -> MARSteps:
  """A random-weight MAR of the bench's size over the grid (16-float tokens), 64 steps (at most L)."""
  model = MARModel(bench_layout(spec), spec.num_classes, spec.depth, spec.dim, spec.num_heads, rngs=nnx.Rngs(0),
                   **bench_head_size(spec))
  return MARSteps(model, min(BENCH_STEPS, model.layout.num_tokens))


def bench_head_size(spec: BenchSpec) -> dict:
  """MAR-B's head (depth 6, width 1024) at the bench's B size (width 768), scaled with the width otherwise."""
  return dict(head_depth=min(6, spec.depth), head_width=round(spec.dim * 4 / 3))


def bench_head(model: nnx.Module, cfg: SamplingConfig) -> DiffusionHead:
  return DiffusionHead(model.head, GaussianDiffusion.cosine(1000).respaced(str(BENCH_DIFFUSION_STEPS)),
                       cfg.temperature)


def bench_sampler(steps: nnx.Module, labels_B: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """The bench's sampling: random orders (masked) and the diffusion head with 100 respaced steps."""
  if isinstance(steps, MARSteps):
    order_BL = random_orders(jax.random.fold_in(rng, 1), labels_B.shape[0], steps.layout.num_tokens)
    return driver.sample(steps, bench_head(steps.model, cfg), {"label": labels_B, "order": order_BL}, rng, cfg)
  return driver.sample(steps, bench_head(steps, cfg), {"label": labels_B}, rng, cfg)


def sampler_steps(config: dict, layout: TokenLayout) -> int:
  """Transformer steps per image: `sample.num_steps` in masked order, one per token in raster order."""
  return config["sample"]["num_steps"] if config["model"]["order"] == "masked" else layout.num_tokens


FAMILY = Family("mar", demo_config="mnist_mar.py", demo_tokenizer="tokenizer_kl", demo_tokenizer_config="mnist_kl.py",
                description=f"continuous (MAR): masked order, {BENCH_DIFFUSION_STEPS}-step diffusion head per token",
                bench_steps=bench_steps, order=50, bench_sampler=bench_sampler, bench_limit=False,
                in_make_demo=False, bench_diffusion_steps=BENCH_DIFFUSION_STEPS, demo_group="continuous",
                sampler_steps=sampler_steps,
                bench_sampling=SamplingConfig(cfg_scale=2.9, cfg_schedule="linear"))  # MAR-B's settings


def default_config(tokenizer_workdir: str, **data) -> ml_collections.ConfigDict:
  """A continuous-family training config with every key and its default (configs/*.py start from it).

  model: `order` (masked: MAR; raster: the causal variant), `size` (B, L, H: MAR's presets; or 'custom' with depth,
  decoder_depth, dim, num_heads, head_depth, head_width), MAR's class buffer, mask ratio floor, class dropout and
  block dropout, the diffusion head's training steps and timesteps per token (`diffusion_batch_mul`). sample: the
  guidance (MAR's 'linear' ramps with the revealed tokens), temperature on the diffusion noise, `num_steps` (masked
  order: MAR's num_iter, 1 .. L), `diffusion_steps` (respaced DDPM steps) and `clip_x0` (0: MAR's unclipped x_0).
  """
  c = base_config(**data)
  c.task = "mar"
  c.frozen = ml_collections.ConfigDict(dict(tokenizer=tokenizer_workdir))
  c.model = ml_collections.ConfigDict(dict(
      order="masked", size="B", depth=12, decoder_depth=12, dim=768, num_heads=12, head_depth=6, head_width=1024,
      buffer_size=64, mlp_ratio=4.0, mask_ratio_min=0.7, num_classes=1000, class_dropout=0.1, dropout=0.1,
      diffusion_train_steps=1000, diffusion_batch_mul=4, attn_impl="auto", dtype="float32", param_dtype="float32"))
  c.sample = ml_collections.ConfigDict(dict(
      temperature=1.0, top_k=0, top_p=1.0, cfg_scale=2.9, cfg_schedule="linear", cfg_interval=(0.0, 1.0),
      num_steps=64, diffusion_steps=100, clip_x0=0.0))
  c.optimizer.update(lr=8e-4, weight_decay=0.02, b1=0.9, b2=0.95)
  return c


# MAR's guidance per size for its headline FIDs (README, 256 sampling steps, temperature 1.0 for B, L and H).
MAR_CFG_SCALES = {"B": 2.9, "L": 3.0, "H": 3.2}


def imagenet_mar_config(arg=None) -> ml_collections.ConfigDict:
  """MAR-`size` on ImageNet 256 (configs/imagenet256_mar.py:size=S) with MAR's recipe: batch 2048, 400 epochs,
  AdamW (0.9, 0.95) at lr 8e-4 (1e-4 x 2048 / 256) after 100 warm-up epochs, then constant; weight decay 0.02, grad
  clip 3, EMA 0.9999, class dropout 0.1, block dropout 0.1, mask ratio >= 0.7, 4 timesteps per token; 16 x 16 tokens
  of the KL-16 tokenizer `tokenizer` (`ar-gen convert-mar --vae kl16.ckpt`'s work directory)."""
  arg = parse_arg(arg, size=None, runlocal=False, tokenizer="runs/kl16")
  if arg.size not in PRESETS:
    raise ConfigError(f"imagenet256_mar.py needs :size=S with S one of MAR's sizes {list(PRESETS)}, got "
                      f"{'no size' if arg.size is None else f'size={arg.size!r}'}")
  c = default_config(arg.tokenizer, train="tfds:imagenet2012:train", eval="tfds:imagenet2012:validation",
                     image_size=256, channels=3, resize="crop", random_flip=True)
  c.batch_size = 2048
  c.total_steps = num_steps(epochs=400, batch_size=c.batch_size, dataset_size=IMAGENET_TRAIN_EXAMPLES)
  warmup = num_steps(epochs=100, batch_size=c.batch_size, dataset_size=IMAGENET_TRAIN_EXAMPLES)
  c.update(ema_decay=0.9999, log_every_steps=100, ckpt_every_steps=5000, vis_every_steps=5000)
  c.optimizer.update(lr=8e-4, warmup_steps=warmup, end_lr_factor=1.0, weight_decay=0.02, b1=0.9, b2=0.95,
                     grad_clip=3.0)
  c.model.update(size=arg.size, num_classes=1000, dtype="bfloat16")
  c.sample.update(cfg_scale=MAR_CFG_SCALES[arg.size], cfg_schedule="linear", temperature=1.0, num_steps=256,
                  diffusion_steps=100)
  if arg.runlocal:
    c.update(total_steps=1, batch_size=2, log_every_steps=1, ckpt_every_steps=1, vis_every_steps=1, vis_examples=2)
    c.data.update(image_size=64, num_threads=1)
    c.optimizer.warmup_steps = 0
    c.model.update(size="custom", depth=1, decoder_depth=1, dim=32, num_heads=2, head_depth=1, head_width=32,
                   buffer_size=4, dtype="float32")
    c.sample.update(num_steps=4, diffusion_steps=5)
  return c


# Training steps on MNIST (batch 32): the causal variant reaches the demo's quality bar only at 3000 (0.63 sample
# accuracy at 3000 with MAR's sampling, 0.32 at 1000; 0.97 at 3000 with constant guidance 3, temperature 0.6).
MNIST_STEPS = {"masked": 1000, "raster": 3000}


def mnist_mar_config(arg=None) -> ml_collections.ConfigDict:
  """MAR (or `:order=raster`, the causal variant) on the MNIST KL tokens (8 x 8 vectors of 4), CPU-sized;
  `:steps=N` (default: MNIST_STEPS of the order); `:draft`: a one-block model of width 48 with a small head, a
  draft for speculative decoding (docs/speculative.md)."""
  arg = parse_arg(arg, runlocal=False, steps=0, order="masked", tokenizer="runs/demo/tokenizer_kl", draft=False)
  if arg.order not in ORDERS:
    raise ConfigError(f"order must be one of {ORDERS}, got {arg.order!r}")
  c = mnist_config(default_config(arg.tokenizer), arg.steps or MNIST_STEPS[arg.order], arg.runlocal)
  c.model.update(order=arg.order, size="custom", depth=3, decoder_depth=3, dim=96, num_heads=3, head_depth=3,
                 head_width=128, buffer_size=4, num_classes=10, dropout=0.0, diffusion_batch_mul=4)
  if arg.draft:
    c.model.update(depth=1, decoder_depth=1, dim=48, num_heads=2, head_depth=2, head_width=64)
  # clip_x0: a head trained for minutes is not accurate enough at the last beta (ar_gen/nn/diffusion.py)
  c.sample.update(cfg_scale=2.0, temperature=0.9, num_steps=16, diffusion_steps=25, clip_x0=4.0)
  if arg.order == "raster":  # measured on the demo (docs/families.md): the causal variant needs a firmer hand
    c.sample.update(cfg_scale=3.0, cfg_schedule="constant", temperature=0.6)
  if arg.runlocal:
    c.sample.update(num_steps=4, diffusion_steps=5)
  return c


def build_model(m: ml_collections.ConfigDict, layout: TokenLayout, rngs: nnx.Rngs) -> nnx.Module:
  """The MAR (order 'masked') or causal (order 'raster') model of a `model` config section."""
  if m.order not in ORDERS:
    raise ConfigError(f"model.order must be one of {ORDERS}, got {m.order!r}")
  if m.size != "custom" and m.size not in PRESETS:
    raise ConfigError(f"model.size must be one of {sorted(PRESETS)} or 'custom', got {m.size!r}")
  depth, dim, heads, head_depth, head_width = (PRESETS[m.size] if m.size != "custom" else
                                               (m.depth, m.dim, m.num_heads, m.head_depth, m.head_width))
  decoder_depth = depth if m.size != "custom" else m.decoder_depth
  kw = dict(class_dropout=m.class_dropout, dropout=m.dropout, head_depth=head_depth, head_width=head_width,
            attn_impl=m.attn_impl, rngs=rngs, dtype=dtype(m.dtype), param_dtype=dtype(m.param_dtype))
  if m.order == "raster":
    return CausalContinuousModel(layout, m.num_classes, depth, dim, heads, **kw)
  return MARModel(layout, m.num_classes, depth, dim, heads, decoder_depth=decoder_depth, buffer_size=m.buffer_size,
                  mlp_ratio=m.mlp_ratio, mask_ratio_min=m.mask_ratio_min, **kw)


class Task(ContinuousTokenTask):
  """Class-conditional continuous-token generation, masked (MAR) or raster (causal) order."""

  def build(self, rngs: nnx.Rngs) -> nnx.Module:
    return build_model(self.config.model, self.layout, rngs)

  def conditioning(self, model, tokens_BLD, labels_B, rng):
    if isinstance(model, CausalContinuousModel):
      z_BLC = model(tokens_BLD, labels_B, train=True, rng=rng)
      return z_BLC, jax.numpy.ones(tokens_BLD.shape[:2], jax.numpy.float32)
    mask_BL = model.random_mask(tokens_BLD.shape[0], jax.random.fold_in(rng, 0))
    z_BLC = model(tokens_BLD, mask_BL, labels_B, capacity=model.train_capacity, train=True,
                  rng=jax.random.fold_in(rng, 1))
    return z_BLC, mask_BL

  def sample_tokens(self, model: nnx.Module, cond: dict, rng: jax.Array, frozen: Any,
                    cfg: SamplingConfig) -> jax.Array:
    """Token vectors [B, L, D] through the one driver with the diffusion head (trace under jit)."""
    del frozen
    head = self.head(model, cfg)
    if isinstance(model, CausalContinuousModel):
      return driver.sample(model, head, cond, rng, cfg)
    order_key, rng = jax.random.split(rng)
    order_BL = random_orders(order_key, cond["label"].shape[0], self.layout.num_tokens)
    tokens = driver.sample(MARSteps(model, self.config.sample.num_steps), head, {**cond, "order": order_BL}, rng, cfg)
    return in_grid_order(tokens, order_BL)

  def check_speculation(self, how: speculative_sampling.Speculation, draft_task) -> None:
    """Continuous speculative decoding (CSpD) with a draft model, for the causal (raster) order."""
    if self.config.model.order != "raster":
      raise UserError(f"speculative decoding of MAR's masked order is not built yet; it runs on the causal variant "
                      f"(model.order='raster', task mar_raster), this run has model.order={self.config.model.order!r}")
    if how.jacobi:
      raise UserError("--jacobi (draft-free speculative Jacobi decoding) needs token ids; continuous tokens need "
                      "a draft model (--draft-workdir)")
    self.check_draft(draft_task, "--draft-workdir")
    if draft_task.config.model.order != "raster":
      raise UserError(f"--draft-workdir holds a model of order {draft_task.config.model.order!r}; a draft for the "
                      "causal variant must be causal (model.order='raster')")
    if draft_task.config.sample.diffusion_steps != self.config.sample.diffusion_steps:
      raise UserError(f"the draft's head samples {draft_task.config.sample.diffusion_steps} diffusion steps, the "
                      f"target's {self.config.sample.diffusion_steps}: aligned trajectories need the same steps "
                      "(set --config.sample.diffusion_steps on the target, or train the draft alike)")

  def speculative_tokens(self, model, draft, draft_task, cond, rng, frozen, cfg, how, valid_B=None):
    """CSpD: both heads at the target's sampling settings, the exact last-step rule (docs/speculative.md)."""
    del frozen
    rule = DiffusionRule(draft_task.head(draft, cfg), self.head(model, cfg), cfg)
    return speculative_sampling.sample(model, draft, cond, rng, rule, how.gamma,
                                       how.prefill_tokens(self.layout.num_tokens), valid_B)
