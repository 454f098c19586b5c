"""`ar-gen cluster-codebook`: k-means over a trained VQ tokenizer's code vectors -> a clustered (coarse) tokenizer.

`cluster(workdir, k, out)` reads the VQ run (its EMA weights if kept), clusters its V code vectors into K groups
(`tokenizers/kmeans.py`; metric `auto`: cosine for an l2-normalised codebook, as LlamaGen's, else Euclidean),
maps every code to its nearest centroid and writes OUT, a `clustered_tokenizer` work directory
(`tokenizers/clustered.py`) that the coarse-to-fine stages name as `frozen.tokenizer`, and OUT/cluster.json
(cluster sizes, inertia per iteration, re-seeded clusters). Every input is checked before a weight is read (a run
that is not a VQ tokenizer, K out of [1, V], an OUT that is not new); the table must be onto [0, K) (every cluster
holds a code), else nothing is written.
"""

from __future__ import annotations

import copy
import hashlib

import jax
import ml_collections
import numpy as np
from flax import nnx

from ar_gen import config as config_lib, fileio, outputs
from ar_gen.errors import UserError
from ar_gen.runs import run as run_lib
from ar_gen.runs import frozen as frozen_lib
from tokenizers import kmeans
from tokenizers.clustered import ClusteredTokenizer

METRICS = ("auto", *kmeans.METRICS)


def _vq_config(workdir: str):
  """The VQ run's config, refusing anything else by name."""
  config = config_lib.load_workdir_config(workdir)
  if config.task != "tokenizer":
    raise UserError(f"--workdir {workdir} holds a {config.task!r} run; cluster-codebook clusters the codebook of a "
                    "trained VQ tokenizer (task 'tokenizer', model.quantizer='vq')")
  if config.model.quantizer != "vq":
    raise UserError(f"--workdir {workdir} is a {config.model.quantizer!r} tokenizer; cluster-codebook needs a VQ "
                    "tokenizer (model.quantizer='vq'): its learned code vectors are what k-means groups (an LFQ "
                    "codebook is the fixed corners of a cube; multi-scale and frequency tokenizers have one codebook "
                    "shared by many maps, which next-scale models already use)")
  return config


def clustered_config(vq_config: ml_collections.ConfigDict, source: dict, k: int, metric: str, iters: int,
                     seed: int, table_sha256: str) -> ml_collections.ConfigDict:
  """The OUT work directory's config: the VQ's, with task `clustered_tokenizer` and the `cluster` section (`source`:
  the VQ's identity; the table's hash, so that the config's fingerprint, the identity that stages 1 and 2 compare,
  names the table itself, whatever device count or precision made it)."""
  config = copy.deepcopy(vq_config)
  config.unlock()
  config.task = "clustered_tokenizer"
  config.ema_decay = 0.0  # the copied weights are the VQ's exported (EMA if kept) ones
  config.cluster = dict(k=k, metric=metric, iters=iters, seed=seed, init="kmeans++", source=source,
                        table_sha256=table_sha256)
  return config


def cluster(workdir: str, k: int, out: str, metric: str = "auto", iters: int = 50, seed: int = 0) -> dict:
  """Writes OUT (a clustered tokenizer of the VQ in `workdir` with `k` clusters) and OUT/cluster.json."""
  vq_config = _vq_config(workdir)
  codebook_size = vq_config.model.vq.codebook_size
  if not 1 <= k <= codebook_size:
    raise UserError(f"--k {k}: the VQ tokenizer {workdir} has {codebook_size} codes, so K must lie in [1, "
                    f"{codebook_size}] (CTF uses 512 for 16384 codes)")
  if metric not in METRICS:
    raise UserError(f"--metric must be one of {METRICS}, got {metric!r}")
  if iters < 1:
    raise UserError(f"--iters must be at least 1, got {iters}")
  if fileio.exists(out) and (not fileio.isdir(out) or fileio.listdir(out)):
    raise UserError(f"--out {out} exists and is not an empty directory: a clustered tokenizer goes into a new one "
                    "(nothing there is replaced)")
  vq = frozen_lib.load("tokenizer", workdir)
  tokenizer = vq.module()
  quantizer = tokenizer.quantizer
  if metric == "auto":
    metric = "cosine" if quantizer.normalize else "euclidean"
  codes_VD = np.asarray(jax.device_get(quantizer.codes()))
  fit = kmeans.fit(codes_VD, k, metric=metric, iters=iters, seed=seed)
  table_V = np.asarray(kmeans.assign(codes_VD, fit.centroids_KD, metric))
  sizes_K = np.bincount(table_V, minlength=k)
  if np.any(sizes_K == 0):
    raise UserError(f"k-means left {int(np.sum(sizes_K == 0))} of {k} clusters without a code (the codebook of "
                    f"{workdir} has {len(np.unique(codes_VD, axis=0))} distinct codes): use a smaller --k")

  def fill(module: ClusteredTokenizer) -> ClusteredTokenizer:
    nnx.update(module.fine, nnx.state(tokenizer))
    module.table[...] = jax.numpy.asarray(table_V, jax.numpy.int32)
    module.centroids[...] = jax.numpy.asarray(fit.centroids_KD, jax.numpy.float32)
    return module

  table_sha256 = hashlib.sha256(table_V.astype(np.int32).tobytes()).hexdigest()
  config = clustered_config(vq_config, vq.identity, k, metric, iters, seed, table_sha256)
  report = {"k": k, "codebook_size": int(codebook_size), "metric": metric, "iters": iters, "seed": seed,
            "source": vq.identity, "cluster_sizes": sizes_K.tolist(), "min_size": int(sizes_K.min()),
            "max_size": int(sizes_K.max()), "inertia": np.asarray(fit.inertia_T).tolist(),
            "final_inertia": float(fit.final_inertia), "reseeded": np.asarray(fit.reseeded_T).tolist()}
  written = [fileio.join(out, name) for name in ("config.json", "checkpoints", "cluster.json")]
  with outputs.removed_on_failure(out, *written):  # a failure leaves no half-written work directory
    run_lib.save_workdir(config, out, fill)
    fileio.write_json(fileio.join(out, "cluster.json"), report)
  return {"out": fileio.absolute(out), **{key: report[key] for key in ("k", "metric", "min_size", "max_size",
                                                                         "final_inertia")}}
