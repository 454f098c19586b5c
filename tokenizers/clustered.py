"""Coarse labels of a VQ tokenizer (CTF): the VQ and its codeword -> cluster table, one frozen tokenizer.

`ar-gen cluster-codebook --workdir VQ --k K --out DIR` clusters the VQ's code vectors with k-means
(`tokenizers/kmeans.py`; on the sphere for an l2-normalised codebook) and writes DIR, a work directory of task
`clustered_tokenizer` whose checkpoint holds a copy of the VQ's weights, the table [V] (codeword -> cluster) and the
K centroids. Its config is the VQ's with `task` and a `cluster` section (K, metric, iterations, seed and the VQ's
identity: `cluster.source`, what a token set of the VQ's fine tokens must have been made by).

As a `Tokenizer` (`tokenizers/protocol.py`) it gives coarse labels: `encode(images)` = table[VQ ids], a raster
layout of K ids on the VQ's grid, and `decode(labels)` renders the centroids through the VQ's decoder (a coarse
picture: what stage 1 alone draws). The fine side is `fine` (the VQ itself), `coarse(fine_ids)` maps ids to
labels, and `table` is what stage 2 masks its logits with.
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
from tokenizers.model import Tokenizer, build_tokenizer


class ClusterData(nnx.Variable):
  """The table and centroids of a composed tokenizer (never trained)."""


class ClusteredTokenizer(nnx.Module):
  """A VQ tokenizer (`fine`) whose token ids are mapped to `num_clusters` coarse labels by a table."""

  def __init__(self, fine: Tokenizer, num_clusters: int):
    if not 1 <= num_clusters <= fine.codebook_size:
      raise ValueError(f"{num_clusters} clusters of a codebook of {fine.codebook_size} codes: need 1 <= K <= "
                       f"{fine.codebook_size}")
    self.fine, self.num_clusters = fine, num_clusters
    self.table = ClusterData(jnp.zeros((fine.codebook_size,), jnp.int32))
    self.centroids = ClusterData(jnp.zeros((num_clusters, fine.quantizer.code_dim), jnp.float32))

  @property
  def codebook_size(self) -> int:
    return self.num_clusters

  @property
  def layout(self) -> TokenLayout:
    """The coarse labels: one raster map of K ids on the VQ's grid."""
    return TokenLayout.raster(self.fine.layout.grid, self.num_clusters)

  @property
  def fine_layout(self) -> TokenLayout:
    return self.fine.layout

  def coarse(self, fine_BL: jax.Array) -> jax.Array:
    """Coarse labels [B, L] of fine token ids [B, L]."""
    return jnp.take(self.table[...], fine_BL, axis=0)

  def encode(self, images_BHWC: jax.Array) -> jax.Array:
    return self.coarse(self.fine.encode(images_BHWC))

  def decode(self, tokens_BL: jax.Array, num_maps: int | None = None) -> jax.Array:
    """Images from coarse labels: each label's centroid in place of the code vector, through the VQ's decoder."""
    del num_maps
    h, w = self.fine.layout.grid
    z_BhwD = jnp.take(self.centroids[...], tokens_BL, axis=0).reshape(tokens_BL.shape[0], h, w, -1)
    return self.fine.decode_codes(z_BhwD)


def build(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> ClusteredTokenizer:
  """The composed tokenizer of a `clustered_tokenizer` config (weights to be restored)."""
  return ClusteredTokenizer(build_tokenizer(config.model, config.data.channels, config.data.image_size, rngs),
                            config.cluster.k)


class ClusteredTokenizerTask(ComposedTokenizerTask):
  """`config.task = 'clustered_tokenizer'`: a work directory made by `ar-gen cluster-codebook`; other runs read its
  `ClusteredTokenizer` as their frozen tokenizer."""

  picture = "recon"
  made_by = "ar-gen cluster-codebook --workdir VQ --k K --out DIR"

  def build(self, rngs: nnx.Rngs) -> ClusteredTokenizer:
    return build(self.config, rngs)

  def visualize(self, model: ClusteredTokenizer, batch: dict, frozen: Any) -> jax.Array:
    """Originals, VQ reconstructions and the coarse labels' centroid pictures (rows)."""
    del frozen
    x = batch["image"]
    return jnp.stack([x, model.fine.decode(model.fine.encode(x)).astype(x.dtype),
                      model.decode(model.encode(x)).astype(x.dtype)])
