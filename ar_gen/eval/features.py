"""Feature extractors for `ar-gen fid`: jitted features and logits of uint8 images, sharded over devices.

`--features inception` gives pool3 features (2048) and, for IS, the 1008 logits without the classifier's bias (as
the Inception-score code of improved-gan and ADM's evaluator take them), from pytorch-fid's network (`inception.py`);
`classifier:DIR` gives the penultimate layer and logits of an `ar-gen train`ed classifier, for data where Inception
means nothing. Inception takes any size and grayscale images repeated to RGB: sizes may differ within a set (each
size goes through the network as its own batches, whose input resize then matches pytorch-fid's per image). A
classifier sees every image, whatever set it comes from, as its training did: resized or padded to its size and
converted to its channels (luma for grayscale) by the data pipeline's preprocessing, as its run's `data` section
says. Extraction runs in fixed-size batches sharded over all local devices; with several processes each takes every
P-th batch and the features are gathered.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ar_gen import fileio
from ar_gen.data import preprocess
from ar_gen.eval import image_sets


@dataclasses.dataclass
class Extractor:
  """Batched features and logits of uint8 images; `data` says how dataset specs are read for it."""

  name: str
  fn: Callable  # (params, uint8 [B, H, W, C]) -> (features, logits)
  params: object
  data: ml_collections.ConfigDict
  channels: int
  prepare: Callable | None = None  # uint8 [H, W, C] -> the uint8 input it takes, if it takes one size only
  classifier: object = None
  num_classes: int | None = None  # the classes of a classifier, which sample labels must be in


def inception_extractor(weights: str | None, image_size: int) -> Extractor:
  from ar_gen.eval import inception_weights  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(inception_weights.load(weights))

  def fn(params, images_BHWC):
    model = nnx.merge(graphdef, params)
    pool3_BF, _ = model(images_BHWC.astype(jnp.float32) / 255.0)
    return pool3_BF, pool3_BF @ model.fc.kernel.value  # unbiased logits [B, 1008]

  data = ml_collections.ConfigDict(dict(eval="", data_dir="", image_size=image_size, channels=3, resize="crop",
                                        random_flip=False, num_threads=4, prefetch=8))
  return Extractor("inception", fn, state, data, channels=3)


def classifier_extractor(workdir: str) -> Extractor:
  from ar_gen.eval.classifier import Classifier  # pylint: disable=g-import-not-at-top
  classifier = Classifier(workdir)

  def fn(params, images_BHWC):
    return classifier.apply(params, images_BHWC.astype(jnp.float32) / 127.5 - 1)

  data = classifier.config.data
  return Extractor(f"classifier:{fileio.absolute(workdir)}", fn, classifier.state, data, channels=data.channels,
                   prepare=functools.partial(image_sets.prepare_image, data=data), classifier=classifier,
                   num_classes=classifier.config.model.num_classes)


def make_extractor(features: str, inception: str | None, image_size: int) -> Extractor:
  if features == "inception":
    return inception_extractor(inception, image_size)
  if features.startswith("classifier:"):
    return classifier_extractor(features.partition(":")[2])
  raise ValueError(f"--features must be 'inception' or 'classifier:DIR', got {features!r}")


def _batches_by_size(images: list[np.ndarray], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(indices, images [batch_size, H, W, C] padded by repeating the last) for each batch of equal-size images."""
  by_size: dict[tuple, list[int]] = {}
  for i, image in enumerate(images):
    by_size.setdefault(image.shape, []).append(i)
  for indices in by_size.values():
    for start in range(0, len(indices), batch_size):
      chunk = indices[start:start + batch_size]
      batch = np.stack([images[i] for i in chunk] + [images[chunk[-1]]] * (batch_size - len(chunk)))
      yield np.asarray(chunk), batch


def extract(extractor: Extractor, images: list[np.ndarray], batch_size: int, desc: str) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
  """Features [N, F] and logits [N, K] in input order; batches sharded over devices, split over processes."""
  prepare = extractor.prepare or functools.partial(preprocess.to_channels, channels=extractor.channels)
  images = [prepare(im) for im in images]
  devices = jax.local_devices()
  batch_size = -(-batch_size // len(devices)) * len(devices)
  mesh = Mesh(np.asarray(devices), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  params = jax.device_put(extractor.params, NamedSharding(mesh, P()))
  fn = jax.jit(extractor.fn)
  batches = list(_batches_by_size(images, batch_size))
  mine = batches[jax.process_index()::jax.process_count()]
  features, logits = [None] * len(images), [None] * len(images)
  with tqdm.tqdm(total=sum(len(i) for i, _ in mine), desc=desc, unit="img") as bar:
    for indices, batch in mine:
      f, l = jax.device_get(fn(params, jax.device_put(batch, sharding)))
      for j, index in enumerate(indices):
        features[index], logits[index] = f[j], l[j]
      bar.update(len(indices))
  if jax.process_count() > 1:
    features, logits = _gather(features), _gather(logits)
  return np.stack(features).astype(np.float64), np.stack(logits).astype(np.float64)


def _gather(rows: list) -> list:
  """Fills each process's missing rows from the others (every row is computed by exactly one process)."""
  width = next(r.shape for r in rows if r is not None)
  mine = np.stack([r if r is not None else np.zeros(width, np.float32) for r in rows])
  have = np.asarray([r is not None for r in rows])
  total = multihost_utils.process_allgather(mine * have[:, None]).sum(0)
  return list(total)
