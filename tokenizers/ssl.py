"""The frozen feature encoder as a run (`config.task = 'feature_encoder'`): converted DINOv2 weights, or a small
ViT that ar-gen trains itself with a self-supervised objective where no such weights exist (MNIST).

A `feature_encoder` work directory holds a `FeatureEncoder` (`tokenizers/dinov2.py`) and, for training, the SSL
projection head. `ssl.objective`:
  * `simclr` (SimCLR, Chen et al. 2020): two augmented views of each image (random shifts of up to `ssl.shift`
    pixels, contrast and brightness jitter of `ssl.jitter`, Gaussian noise of `ssl.noise`), the mean patch feature
    after the last block through a two-layer projection head, and the NT-Xent loss at temperature
    `ssl.temperature` over the 2B views of a batch. Labels are never read.
  * `none`: weights from elsewhere (`ar-gen convert-dinov2`); `ar-gen train` refuses the run.
The encoder never sees the classifier that judges the samples: they are separate runs. `export` gives the encoder
without its head; `ar-gen fit-kmeans` reads it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from ar_gen.config import ConfigError, base_config
from ar_gen.errors import UserError
from ar_gen.nn.layers import l2_normalize
from tokenizers.dinov2 import FeatureEncoder, build_encoder, encoder_section

OBJECTIVES = ("simclr", "none")


def feature_encoder_config(**data) -> ml_collections.ConfigDict:
  """A `feature_encoder` config with every key (the `encoder` section of `tokenizers/dinov2.py`, the `ssl` one)."""
  c = base_config(**data)
  c.task = "feature_encoder"
  c.encoder = encoder_section()
  c.ssl = ml_collections.ConfigDict(dict(objective="simclr", temperature=0.2, proj_dim=64, shift=4, jitter=0.3,
                                         noise=0.1))
  return c


class SSLEncoder(nnx.Module):
  """The encoder and SimCLR's projection head (dim -> dim -> proj_dim, ReLU)."""

  def __init__(self, encoder: FeatureEncoder, proj_dim: int, rngs: nnx.Rngs):
    self.encoder = encoder
    self.proj1 = nnx.Linear(encoder.dim, encoder.dim, rngs=rngs)
    self.proj2 = nnx.Linear(encoder.dim, proj_dim, rngs=rngs)

  def __call__(self, images_BHWC: jax.Array) -> jax.Array:
    return self.proj2(nnx.relu(self.proj1(self.encoder.pooled(images_BHWC))))


def augment(images_BHWC: jax.Array, rng: jax.Array, shift: int, jitter: float, noise: float) -> jax.Array:
  """A random view of each image in [-1, 1]: shifted by up to `shift` pixels (zero-filled: the background),
  contrast and brightness scaled by 1 +- `jitter`, plus Gaussian noise of std `noise`."""
  b, h, w, c = images_BHWC.shape
  k_shift, k_con, k_bri, k_noise = jax.random.split(rng, 4)
  x = (images_BHWC.astype(jnp.float32) + 1) / 2
  padded = jnp.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
  offsets_B2 = jax.random.randint(k_shift, (b, 2), 0, 2 * shift + 1)
  x = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c)))(padded, offsets_B2)
  contrast = 1 + jax.random.uniform(k_con, (b, 1, 1, 1), minval=-jitter, maxval=jitter)
  brightness = jax.random.uniform(k_bri, (b, 1, 1, 1), minval=-jitter, maxval=jitter) / 2
  x = x * contrast + brightness + noise * jax.random.normal(k_noise, x.shape)
  return jnp.clip(x * 2 - 1, -1, 1)


def nt_xent(z1_BD: jax.Array, z2_BD: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
  """SimCLR's loss over 2B views (each view's positive is its pair, the other 2B - 2 are negatives) and the share
  of views whose most similar other view is their pair."""
  b = z1_BD.shape[0]
  z = l2_normalize(jnp.concatenate([z1_BD, z2_BD]).astype(jnp.float32))
  sim = jnp.einsum("nd,md->nm", z, z, precision=jax.lax.Precision.HIGHEST) / temperature
  sim = jnp.where(jnp.eye(2 * b, dtype=bool), -jnp.inf, sim)
  pair_N = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)])
  loss = optax.softmax_cross_entropy_with_integer_labels(sim, pair_N).mean()
  return loss, jnp.mean(jnp.argmax(sim, -1) == pair_N)


class FeatureEncoderTask:
  """A frozen feature encoder's run: SimCLR training of a small ViT, or converted weights (`ssl.objective`)."""

  picture = "views"
  exports = "encoder"

  def __init__(self, config: ml_collections.ConfigDict, frozen: dict[str, Any]):
    self.config, self.frozen = config, frozen
    if config.ssl.objective not in OBJECTIVES:
      raise ConfigError(f"ssl.objective={config.ssl.objective!r}: one of {list(OBJECTIVES)}")

  def build(self, rngs: nnx.Rngs) -> SSLEncoder:
    encoder = build_encoder(self.config.encoder, self.config.data.channels, rngs)
    return SSLEncoder(encoder, self.config.ssl.proj_dim, rngs)

  def export(self, model: SSLEncoder) -> FeatureEncoder:
    return model.encoder

  def check_source(self, source: Any) -> None:
    del source
    if self.config.ssl.objective == "none":
      raise UserError("this feature encoder's weights come from elsewhere (ssl.objective='none', e.g. `ar-gen "
                      "convert-dinov2`): it is not trained by ar-gen; set ssl.objective='simclr' to train one")

  def prepare(self, batch: dict, frozen: Any) -> dict:
    del frozen
    return batch

  def post_update(self, model, extras, rng, step) -> dict:
    return {}

  def summarize(self, window) -> dict:
    return {}

  def views(self, images: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    s = self.config.ssl
    return tuple(augment(images, jax.random.fold_in(rng, i), s.shift, s.jitter, s.noise) for i in range(2))

  def loss(self, model: SSLEncoder, batch: dict, rng: jax.Array, step: jax.Array, frozen: Any):
    del step, frozen
    v1, v2 = self.views(batch["image"], rng)
    loss, accuracy = nt_xent(model(v1), model(v2), self.config.ssl.temperature)
    return loss, {"pair_accuracy": accuracy}, None

  def visualize(self, model: SSLEncoder, batch: dict, frozen: Any) -> jax.Array:
    """Rows: the images and two augmented views of each (what the objective compares)."""
    del model, frozen
    x = batch["image"]
    v1, v2 = self.views(x, jax.random.PRNGKey(0))
    return jnp.stack([x, v1.astype(x.dtype), v2.astype(x.dtype)])
