"""Training task of the next-token family (`config.task = 'next_token'`): cross-entropy on a tokenizer's grid.

Tokens come from the frozen tokenizer of `config.tokenizer_workdir`, computed inside the jitted step from the
images of `data.train` (the tokenizer's state is the task's `frozen` pytree), or from `tokens` in the batch when
the data is a `tokens:` dataset written by `ar-gen extract-tokens`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from ar_gen.decoding.logits import SamplingConfig
from ar_gen.decoding.sampler import sample_next_token
from ar_gen.models.frozen_tokenizer import FrozenTokenizer
from ar_gen.models.next_token import NextTokenModel, build_next_token


def sampling_config(s: ml_collections.ConfigDict, **overrides) -> SamplingConfig:
  """The `sample` section of a config as a SamplingConfig (CLI flags override it)."""
  values = dict(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, cfg_scale=s.cfg_scale,
                cfg_schedule=s.cfg_schedule, cfg_interval=tuple(s.cfg_interval))
  values.update({k: v for k, v in overrides.items() if v is not None})
  return SamplingConfig(**values)


class NextTokenTask:
  """Class-conditional next-token prediction over a frozen tokenizer's tokens."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.tokenizer = FrozenTokenizer(config.tokenizer_workdir)
    self.tokenizer.check_data(config.data)
    self.check_tokenizer()
    self.frozen = self.tokenizer.state

  def check_tokenizer(self) -> None:
    if self.tokenizer.token_shape != self.tokenizer.grid:
      raise ValueError(f"task next_token needs a tokenizer with one token map; {self.tokenizer.workdir} is "
                       f"{self.tokenizer.config.model.quantizer!r} (tokens {self.tokenizer.token_shape}): use "
                       "task next_scale")

  def build(self, rngs: nnx.Rngs) -> NextTokenModel:
    return build_next_token(self.config.model, self.tokenizer.codebook_size, self.tokenizer.grid, rngs)

  def prepare(self, batch: dict[str, jax.Array], frozen: Any) -> dict[str, jax.Array]:
    """Adds `tokens` [B, N] (raster order) from the frozen tokenizer unless the batch has them."""
    if "tokens" in batch:
      return batch
    return {**batch, "tokens": self.tokenizer.encode_flat(frozen, batch["image"])}

  def loss(self, model: NextTokenModel, batch: dict, rng: jax.Array, step: jax.Array, frozen: Any):
    del step, frozen
    tokens_BN = batch["tokens"].astype(jnp.int32)
    logits_BNV = model(tokens_BN, batch["label"].astype(jnp.int32), train=True, rng=rng)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits_BNV, tokens_BN).mean()
    accuracy = jnp.mean(jnp.argmax(logits_BNV, -1) == tokens_BN)
    return loss, {"token_accuracy": accuracy}, None

  def post_update(self, model, extras, rng, step) -> dict:
    return {}

  def summarize(self, window: dict) -> dict:
    return {}

  def sample_images(self, model: NextTokenModel, labels_B: jax.Array, rng: jax.Array, frozen: Any,
                    cfg: SamplingConfig) -> tuple[jax.Array, jax.Array]:
    """(images [B, H, W, C] in [-1, 1], tokens [B, N]) for class labels (trace under jit)."""
    tokens_BN = sample_next_token(model, labels_B, rng, cfg)
    return jnp.clip(self.tokenizer.decode_flat(frozen, tokens_BN), -1, 1), tokens_BN

  def visualize(self, model: NextTokenModel, batch: dict, frozen: Any) -> jax.Array:
    """One row of samples, classes 0, 1, 2, ... with the config's sampling settings and a fixed seed."""
    n = batch["label"].shape[0]
    labels = jnp.arange(n, dtype=jnp.int32) % model.num_classes
    images, _ = self.sample_images(model, labels, jax.random.PRNGKey(0), frozen, sampling_config(self.config.sample))
    return images[None]
