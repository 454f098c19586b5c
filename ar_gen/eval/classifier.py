"""A small CNN classifier for datasets where Inception means nothing (MNIST): trained with `ar-gen train`
(`config.task = 'classifier'`), it scores class-conditional samples (`sample_accuracy`) and gives features for FID.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from ar_gen.config import base_config
from ar_gen.data.preprocess import to_float
from ar_gen.runs.run import restore_run
from ar_gen.runs.task import TaskBase


class CNN(nnx.Module):
  """conv(32)-pool-conv(64)-pool-dense(features)-dense(classes); `features` is the penultimate layer."""

  def __init__(self, channels: int, num_classes: int, image_size: int, features: int = 128, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(channels, 32, (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
    self.dense = nnx.Linear(64 * (image_size // 4) ** 2, features, rngs=rngs)
    self.head = nnx.Linear(features, num_classes, rngs=rngs)

  def features(self, x_BHWC: jax.Array) -> jax.Array:
    h = nnx.avg_pool(nnx.relu(self.conv1(x_BHWC)), (2, 2), (2, 2))
    h = nnx.avg_pool(nnx.relu(self.conv2(h)), (2, 2), (2, 2))
    return nnx.relu(self.dense(h.reshape(h.shape[0], -1)))

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return self.head(self.features(x_BHWC))


def classifier_config(**data) -> ml_collections.ConfigDict:
  c = base_config(**data)
  c.task = "classifier"
  c.model = ml_collections.ConfigDict(dict(num_classes=10, features=128))
  return c


class ClassifierTask(TaskBase):
  """Cross-entropy training of the CNN."""

  picture = "inputs"
  exports = "classifier"

  def build(self, rngs: nnx.Rngs) -> CNN:
    d, m = self.config.data, self.config.model
    return CNN(d.channels, m.num_classes, d.image_size, m.features, rngs=rngs)

  def loss(self, model: CNN, batch: dict, rng: jax.Array, step: jax.Array, frozen: Any):
    del rng, step, frozen
    logits = model(batch["image"])
    labels = batch["label"].astype(jnp.int32)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}, None

  def visualize(self, model: CNN, batch: dict, frozen: Any) -> jax.Array:
    return batch["image"][None]


class Classifier:
  """A trained classifier of `workdir`: `predict` and `features` on uint8 or [-1, 1] images, batched and jitted."""

  def __init__(self, workdir: str):
    run, state, _ = restore_run(workdir)
    if run.config.task != "classifier":
      raise ValueError(f"{workdir} holds a {run.config.task!r} run, not a classifier")
    self.config = run.config
    graphdef, model_state = nnx.split(run.model(state))

    def features_and_logits(s, x):
      model = nnx.merge(graphdef, s)
      features = model.features(x)
      return features, model.head(features)

    self.apply = jax.jit(features_and_logits)  # (state, images in [-1, 1]) -> (features, logits)
    self.state = model_state

  def features_and_logits(self, images_NHWC: np.ndarray, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features [N, F] and logits [N, classes] of uint8 or [-1, 1] images of the training size."""
    images = np.asarray(images_NHWC)
    size, channels = self.config.data.image_size, self.config.data.channels
    if images.ndim != 4 or images.shape[1:] != (size, size, channels):
      raise ValueError(f"the classifier takes images of shape [N, {size}, {size}, {channels}], got {images.shape}")
    features, logits = [], []
    for i in range(0, len(images), batch_size):
      x = images[i:i + batch_size]
      f, l = self.apply(self.state, jnp.asarray(to_float(x) if x.dtype == np.uint8 else x))
      features.append(np.asarray(f))
      logits.append(np.asarray(l))
    return np.concatenate(features), np.concatenate(logits)

  def predict(self, images_NHWC: np.ndarray, batch_size: int = 500) -> np.ndarray:
    return self.features_and_logits(images_NHWC, batch_size)[1].argmax(-1)

  def features(self, images_NHWC: np.ndarray, batch_size: int = 500) -> np.ndarray:
    return self.features_and_logits(images_NHWC, batch_size)[0]

  def accuracy(self, images_NHWC: np.ndarray, labels_N: np.ndarray) -> float:
    return float(np.mean(self.predict(images_NHWC) == np.asarray(labels_N)))
