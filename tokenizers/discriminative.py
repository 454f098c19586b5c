"""Discriminative tokens (DiGIT): a frozen self-supervised encoder plus k-means centroids, one encode-only tokenizer.

`ar-gen fit-kmeans --encoder ENC --data SPEC --k K --out DIR` runs the encoder (`tokenizers/dinov2.py`, a
`feature_encoder` run) over a sample of the training images, fits K centroids to its features at
`encoder.layer` (Euclidean k-means, `tokenizers/kmeans.py`, as DiGIT's faiss run) and writes DIR, a work
directory of task `discriminative_tokenizer` holding a copy of the encoder's weights and the centroids [K, D]. Its
config is the encoder run's with `task` and a `kmeans` section (K, iterations, seed, how many images and
vectors, the encoder's identity: `kmeans.source`).

As a `Tokenizer` (`tokenizers/protocol.py`) it encodes only: `encode(images)` = the nearest centroid (squared
Euclidean) of each patch feature, a raster layout of K ids on the encoder's patch grid. These ids have no
decoder: pixels come from the discriminative family's stage 2 (a pixel decoder generating a VQ's tokens). So
that the pictures of a run over the ids (stage 1's samples) still show something, `decode` draws each id as a
flat patch of its own grey level (id / (K - 1)): a label map, not an image.
The task is not trainable: `ar-gen train` refuses it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen.layout import TokenLayout
from tokenizers.composed import ComposedTokenizerTask
from tokenizers import kmeans
from tokenizers.dinov2 import FeatureEncoder, block_index, build_encoder


class Centroids(nnx.Variable):
  """The k-means centroids of a discriminative tokenizer (never trained)."""


class DiscriminativeTokenizer(nnx.Module):
  """Images -> ids of the nearest of `num_clusters` centroids of the encoder's features at `layer`."""

  def __init__(self, encoder: FeatureEncoder, num_clusters: int, layer: int, image_size: int, channels: int):
    self.encoder, self.num_clusters = encoder, num_clusters
    self.layer = block_index(layer, encoder.depth)
    self.image_size, self.channels = image_size, channels
    self.centroids = Centroids(jnp.zeros((num_clusters, encoder.dim), jnp.float32))

  @property
  def codebook_size(self) -> int:
    return self.num_clusters

  @property
  def layout(self) -> TokenLayout:
    return TokenLayout.raster(self.encoder.grid, self.num_clusters)

  def features(self, images_BHWC: jax.Array) -> jax.Array:
    """The encoder's features [B, L, D] at the tokenizer's layer."""
    return self.encoder.features(images_BHWC, self.layer)

  def encode(self, images_BHWC: jax.Array) -> jax.Array:
    f_BLD = self.features(images_BHWC)
    b, n, d = f_BLD.shape
    return kmeans.assign(f_BLD.reshape(b * n, d), self.centroids[...], "euclidean").reshape(b, n)

  def decode(self, tokens_BL: jax.Array, num_maps: int | None = None) -> jax.Array:
    """A label map [B, H, W, C] in [-1, 1]: each id's patch at grey level id / (K - 1) (see the module
    docstring: discriminative ids have no pixel decoder of their own)."""
    del num_maps
    h, w = self.encoder.grid
    grey = tokens_BL.astype(jnp.float32) / max(self.num_clusters - 1, 1) * 2 - 1
    cells = grey.reshape(-1, h, w, 1)
    images = jax.image.resize(cells, (cells.shape[0], self.image_size, self.image_size, 1), "nearest")
    return jnp.broadcast_to(images, (*images.shape[:3], self.channels))


def build(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> DiscriminativeTokenizer:
  """The composed tokenizer of a `discriminative_tokenizer` config (weights to be restored)."""
  encoder = build_encoder(config.encoder, config.data.channels, rngs)
  return DiscriminativeTokenizer(encoder, config.kmeans.k, config.encoder.layer, config.data.image_size,
                                 config.data.channels)


class DiscriminativeTokenizerTask(ComposedTokenizerTask):
  """`config.task = 'discriminative_tokenizer'`: a work directory made by `ar-gen fit-kmeans`; other runs read its
  `DiscriminativeTokenizer` as a frozen tokenizer (stage 1) or as the source of stage 2's prefix ids."""

  picture = "ids"
  made_by = "ar-gen fit-kmeans --encoder ENC --data SPEC --k K --out DIR"

  def build(self, rngs: nnx.Rngs) -> DiscriminativeTokenizer:
    return build(self.config, rngs)

  def visualize(self, model: DiscriminativeTokenizer, batch: dict, frozen: Any) -> jax.Array:
    """Rows: the images and their ids as label maps."""
    del frozen
    x = batch["image"]
    return jnp.stack([x, model.decode(model.encode(x)).astype(x.dtype)])
