"""The part every family over a frozen tokenizer shares (`FrozenTokenizerTask`), and the discrete families' task.

Tokens [B, L] (ids) or [B, L, D] (vectors) come from the frozen tokenizer `frozen.tokenizer` (its state is
`frozen["tokenizer"]` inside the jitted step), computed from the images of `data.train`, or from `tokens` in the
batch when the data is a `tokens:` dataset written by `ar-gen extract-tokens`; the tokenizer's layout kind must be
the family's (`token_kind`). A discrete family subclasses `DiscreteTokenTask` with `build` (its model over the
tokenizer's layout), `logits` (teacher-forced logits [B, L, V]) and `steps` (its sampler step contract); the sampler
is the one driver (`ar_gen.decoding.driver.sample`) with the categorical head. The condition is {"label": class
ids [B]}. The continuous families' task is `_continuous.py`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from ar_gen.conditioning import class_labels
from ar_gen.config import ConfigError, sample_quality_eval
from ar_gen.decoding import driver
from ar_gen.decoding.heads import CategoricalHead
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.decoding.speculative_sampling import Speculation
from ar_gen.errors import UserError
from ar_gen.layout import TokenLayout
from ar_gen.runs.task import TaskBase


class FrozenTokenizerTask(TaskBase):
  """Class-conditional generation of a frozen tokenizer's tokens (subclass: build, loss, sample_tokens)."""

  token_kind = "ids"  # the layout kind the family generates

  def __init__(self, config: ml_collections.ConfigDict, frozen: dict[str, Any]):
    super().__init__(config, frozen)
    if "tokenizer" not in frozen:
      raise ValueError(f"task {config.task} needs frozen.tokenizer: the work directory of a trained tokenizer")
    self.tokenizer = frozen["tokenizer"]
    self.tokenizer.check_exports("tokenizer")
    self.tokenizer.check_data(config.data)
    self.layout: TokenLayout = self.tokenizer.layout
    if self.layout.kind != self.token_kind:
      other = "a continuous (KL) tokenizer's vectors" if self.token_kind == "vectors" else "a quantizer's token ids"
      raise ValueError(f"task {config.task} generates {other}, but frozen.tokenizer={self.tokenizer.source!r} "
                       f"gives {self.layout.describe()}")

  def token_set_identity(self) -> dict | None:
    """The identity a `tokens:` training set must record (None: the frozen tokenizer's own; a family whose tokens
    come from a tokenizer the frozen one holds a copy of, e.g. coarse-to-fine's stage 2, says that one's)."""
    return None

  def check_source(self, source: Any) -> None:
    """Also: a `tokens:` dataset must have been extracted by this run's frozen tokenizer (same config, step)."""
    super().check_source(source)
    meta = getattr(source, "meta", None)
    if meta is not None:
      recorded = meta.get("tokenizer") or {"workdir": meta.get("tokenizer_workdir"), "step": meta.get("tokenizer_step")}
      self.tokenizer.check_identity(recorded, f"data.train={self.config.data.train!r}", self.token_set_identity())

  def sample_tokens(self, model: nnx.Module, cond: dict, rng: jax.Array, frozen: Any,
                    cfg: SamplingConfig) -> jax.Array:
    """Tokens of the layout for conditions {"label": [B]} (trace under jit)."""
    raise NotImplementedError

  def speculative_tokens(self, model: nnx.Module, draft: nnx.Module | None, draft_task: Any, cond: dict,
                         rng: jax.Array, frozen: Any, cfg: SamplingConfig, how: Speculation,
                         valid_B: jax.Array | None = None) -> tuple[jax.Array, Any]:
    """(tokens, SpeculativeStats) by speculative decoding (`ar_gen.decoding.speculative_sampling`) with the draft
    run's model `draft` and task (None when draft-free) (trace under jit); `check_speculation` has passed;
    `valid_B`: the real rows (the others pad the batch and never move its stop)."""
    raise NotImplementedError

  def check_speculation(self, how: Speculation, draft_task: Any) -> None:
    """Refuses, naming why, a speculation this family cannot do or a draft run that cannot draft for it (a
    family with a speculative sampler overrides this)."""
    raise UserError(f"task {self.config.task} has no speculative sampler (the causal families have one: "
                    "next_token, mar_raster)")

  def check_draft(self, draft_task: Any, what: str) -> None:
    """A draft run must generate the same tokens: the same tokenizer (weights and step) and layout."""
    if draft_task is None:
      raise UserError(f"{what}: speculative decoding with a draft model needs --draft-workdir (or --jacobi, "
                      "draft-free, for token ids)")
    mine, theirs = self.tokenizer.identity, getattr(getattr(draft_task, "tokenizer", None), "identity", None)
    if theirs is None or (theirs["fingerprint"], theirs["step"]) != (mine["fingerprint"], mine["step"]):
      where = f"{theirs['workdir']} at step {theirs['step']}" if theirs else f"no tokenizer ({draft_task.config.task})"
      raise UserError(f"{what} generates the tokens of {where}, but the target's are those of {mine['workdir']} "
                      f"at step {mine['step']}: a draft must be trained on the target's tokenizer")
    classes = (self.config.model.get("num_classes"), draft_task.config.model.get("num_classes"))
    if classes[0] != classes[1]:
      raise UserError(f"{what} is a model of {classes[1]} classes, the target of {classes[0]}: a draft must know "
                      "the target's classes")
    if draft_task.layout != self.layout:
      raise UserError(f"{what} generates {draft_task.layout.describe()}, the target {self.layout.describe()}")

  def speculative_images(self, model: nnx.Module, draft: nnx.Module | None, draft_task: Any, cond: dict,
                         rng: jax.Array, frozen: Any, cfg: SamplingConfig,
                         how: Speculation, valid_B: jax.Array | None = None) -> tuple[jax.Array, Any]:
    """(images [B, H, W, C] in [-1, 1], SpeculativeStats) by speculative decoding (trace under jit)."""
    tokens, stats = self.speculative_tokens(model, draft, draft_task, cond, rng, frozen, cfg, how, valid_B)
    return self.decode_images(tokens, frozen), stats

  # ---------------------------------------------------------------- shared
  def tokenizer_module(self, frozen: Any):
    """The frozen tokenizer with `frozen`'s state (inside traced code), or the loaded one if `frozen` is None."""
    return self.tokenizer.module(None if frozen is None else frozen["tokenizer"])

  def decode_images(self, tokens: jax.Array, frozen: Any) -> jax.Array:
    """Images [B, H, W, C] in [-1, 1] of the tokens this family generates (a family whose tokens are not its frozen
    tokenizer's, e.g. coarse-to-fine's fine tokens, says how)."""
    return jnp.clip(self.tokenizer_module(frozen).decode(tokens), -1, 1)

  def prepare(self, batch: dict[str, jax.Array], frozen: Any) -> dict[str, jax.Array]:
    """Adds `tokens` from the frozen tokenizer unless the batch has them (then they must fit its layout)."""
    if "tokens" in batch:
      self.layout.check(batch["tokens"])  # at trace time: a tokens: dataset of another layout is named
      return batch
    return {**batch, "tokens": self.tokenizer_module(frozen).encode(batch["image"])}

  def condition(self, labels_B: jax.Array) -> dict:
    """The sampling condition of class labels [B] (`ar_gen.conditioning`)."""
    return class_labels(labels_B)

  def sampling_config(self, **overrides) -> SamplingConfig:
    return SamplingConfig.from_config(self.config.sample, **overrides)

  def sample_images(self, model: nnx.Module, cond: dict, rng: jax.Array, frozen: Any,
                    cfg: SamplingConfig) -> tuple[jax.Array, jax.Array]:
    """(images [B, H, W, C] in [-1, 1], tokens) for conditions (trace under jit)."""
    tokens = self.sample_tokens(model, cond, rng, frozen, cfg)
    return self.decode_images(tokens, frozen), tokens

  def visualize(self, model: nnx.Module, batch: dict, frozen: Any) -> jax.Array:
    """One row of samples, classes 0, 1, 2, ... with the config's sampling settings and a fixed seed."""
    n = batch["label"].shape[0]
    cond = self.condition(jnp.arange(n, dtype=jnp.int32) % self.config.model.num_classes)
    images, _ = self.sample_images(model, cond, jax.random.PRNGKey(0), frozen, self.sampling_config())
    return images[None]


class DiscreteTokenTask(FrozenTokenizerTask):
  """Class-conditional generation of a frozen tokenizer's token ids (subclass: build, logits, steps)."""

  def logits(self, model: nnx.Module, tokens_BL: jax.Array, labels_B: jax.Array, rng: jax.Array,
             frozen: Any) -> jax.Array:
    """Teacher-forced logits [B, L, V]."""
    raise NotImplementedError

  def steps(self, model: nnx.Module, frozen: Any) -> driver.Steps:
    """The sampler's step contract for `model` (and the frozen state)."""
    raise NotImplementedError

  def loss(self, model: nnx.Module, batch: dict, rng: jax.Array, step: jax.Array, frozen: Any):
    del step
    tokens_BL = batch["tokens"].astype(jnp.int32)
    logits_BLV = self.logits(model, tokens_BL, batch["label"].astype(jnp.int32), rng, frozen)
    loss = token_cross_entropy(logits_BLV, tokens_BL, self.config.model.get("label_smoothing", 0.0)).mean()
    accuracy = jnp.mean(jnp.argmax(logits_BLV, -1) == tokens_BL)
    return loss, {"token_accuracy": accuracy}, None

  def sample_tokens(self, model: nnx.Module, cond: dict, rng: jax.Array, frozen: Any,
                    cfg: SamplingConfig) -> jax.Array:
    """Token ids [B, L] for conditions {"label": [B]} through the one sampler driver (trace under jit)."""
    return driver.sample(self.steps(model, frozen), CategoricalHead(cfg), cond, rng, cfg)


def token_cross_entropy(logits_BLV: jax.Array, tokens_BL: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Cross-entropy [B, L] of token ids, against targets smoothed by `label_smoothing` (DiGIT's stage 1: 0.1)."""
  if not label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits_BLV, tokens_BL)
  targets = optax.smooth_labels(jax.nn.one_hot(tokens_BL, logits_BLV.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits_BLV, targets)


def frozen_stage1(config: ml_collections.ConfigDict, frozen: dict[str, Any], tokenizer: Any,
                  what_tokens: str) -> Any:
  """A two-stage family's stage 1 (`frozen.stage1`; None when empty, refused when an in-training evaluator samples
  images), checked by `check_stage1`."""
  stage1 = frozen.get("stage1")
  if stage1 is not None:
    check_stage1(stage1, tokenizer, config.model.num_classes, what_tokens)
  sampling = [name for name, e in (config.get("evals") or {}).items()
              if e.get("kind") == "sample_quality" and e.get("every_steps", 0)]
  if stage1 is None and sampling:
    raise ConfigError(f"evals.{sampling[0]} samples images, which needs stage 1: set frozen.stage1 to the "
                      "stage-1 run (or turn the evaluator off)")
  return stage1


def check_stage1(stage1: Any, tokenizer: Any, num_classes: int, what_tokens: str) -> None:
  """A two-stage family's stage 1 must be a next_token run over `tokenizer`'s tokens (its identity recorded) and
  know the classes of stage 2 (`num_classes`); `what_tokens` names those tokens in the messages."""
  what = f"frozen.stage1={stage1.source!r}"
  if stage1.config.task != "next_token":
    raise ConfigError(f"{what} holds a {stage1.config.task!r} run; stage 1 is a next_token run over the "
                      f"{what_tokens} of {tokenizer.source}")
  theirs, mine = stage1.frozen_identities.get("tokenizer"), tokenizer.identity
  if theirs is None and stage1.step is not None:  # weights, but no record of the tokenizer they were trained on
    raise ConfigError(f"{what} does not record which tokenizer it was trained on (frozen.tokenizer)")
  if theirs is not None and (theirs["fingerprint"], theirs["step"]) != (mine["fingerprint"], mine["step"]):
    raise ConfigError(f"{what} generates the {what_tokens} of {theirs['workdir']}, but stage 2 reads those of "
                      f"{mine['workdir']}: both stages must use the same tokenizer")
  if stage1.config.model.num_classes != num_classes:
    raise ConfigError(f"{what} knows {stage1.config.model.num_classes} classes, stage 2 {num_classes}")


def mnist_config(c: ml_collections.ConfigDict, steps: int, runlocal: bool) -> ml_collections.ConfigDict:
  """The CPU-sized MNIST training setting shared by configs/mnist_next_token.py and mnist_var.py, with the
  sample-quality evaluator declared (off: `--config.evals.sample_quality.every_steps=N` turns it on; the demo sets
  N = total_steps and the classifier's directory)."""
  c.data.update(train="bundled:mnist:train", eval="bundled:mnist:test", image_size=32, channels=1, resize="pad",
                num_threads=2)
  c.update(total_steps=5 if runlocal else steps, batch_size=32, log_every_steps=50, ckpt_every_steps=500,
           vis_every_steps=500, vis_examples=10)
  c.optimizer.update(lr=2e-3, warmup_steps=100, end_lr_factor=0.05, weight_decay=0.05)
  c.evals = {"sample_quality": sample_quality_eval(ref="bundled:mnist:test",
                                                   features="classifier:runs/demo/classifier")}
  return c
