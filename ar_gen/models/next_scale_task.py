"""Training task of the next-scale family (`config.task = 'next_scale'`): cross-entropy on a multi-scale tokenizer.

Tokens [B, L] (all scales, coarse to fine) come from the frozen multi-scale tokenizer of `config.tokenizer_workdir`
(or from a `tokens:` dataset), as for the next-token task; the model's teacher-forced inputs are the tokenizer's
accumulated features of the scales before each scale, computed from the tokens inside the jitted step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ar_gen.decoding.logits import SamplingConfig
from ar_gen.decoding.sampler import sample_next_scale
from ar_gen.models.next_scale import NextScaleModel, build_next_scale
from ar_gen.models.next_token_task import NextTokenTask
from tokenizers.multiscale import MultiScaleQuantizer


class NextScaleTask(NextTokenTask):
  """Class-conditional next-scale prediction over a frozen multi-scale tokenizer's tokens."""

  def check_tokenizer(self) -> None:
    if not isinstance(self.tokenizer.module().quantizer, MultiScaleQuantizer):
      raise ValueError(f"task next_scale needs a multi-scale tokenizer (model.quantizer='multiscale'); "
                       f"{self.tokenizer.workdir} has model.quantizer={self.tokenizer.config.model.quantizer!r}")

  def quantizer(self, frozen: Any) -> MultiScaleQuantizer:
    return self.tokenizer.module(frozen).quantizer

  def build(self, rngs: nnx.Rngs) -> NextScaleModel:
    q = self.quantizer(None)
    return build_next_scale(self.config.model, q.codebook_size, q.code_dim, q.scales, rngs)

  def loss(self, model: NextScaleModel, batch: dict, rng: jax.Array, step: jax.Array, frozen: Any):
    del step
    tokens_BL = batch["tokens"].astype(jnp.int32)
    inputs_BlD = self.quantizer(frozen).teacher_inputs(tokens_BL)
    logits_BLV = model(inputs_BlD, batch["label"].astype(jnp.int32), train=True, rng=rng)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, tokens_BL).mean()
    accuracy = jnp.mean(jnp.argmax(logits_BLV, -1) == tokens_BL)
    return loss, {"token_accuracy": accuracy}, None

  def sample_images(self, model: NextScaleModel, labels_B: jax.Array, rng: jax.Array, frozen: Any,
                    cfg: SamplingConfig) -> tuple[jax.Array, jax.Array]:
    """(images [B, H, W, C] in [-1, 1], tokens [B, L]) for class labels (trace under jit)."""
    tokens_BL = sample_next_scale(model, self.quantizer(frozen), labels_B, rng, cfg)
    return jnp.clip(self.tokenizer.decode_flat(frozen, tokens_BL), -1, 1), tokens_BL
