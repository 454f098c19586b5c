"""`ar-gen fit-kmeans`: k-means over a frozen feature encoder's patch features -> a discriminative tokenizer (DiGIT).

`fit(encoder, spec, k, out)` reads the encoder run (`feature_encoder`: converted DINOv2 weights or ar-gen's own SSL
encoder), runs it over `examples` images drawn at random from dataset `spec` (prepared with the encoder run's data
settings), keeps `vectors` of their patch features at the feature layer (all if 0), fits K centroids (Euclidean
k-means++ then Lloyd, `tokenizers/kmeans.py`; DiGIT fits with faiss on the same metric) and writes OUT, a
`discriminative_tokenizer` work directory (`tokenizers/discriminative.py`), and OUT/kmeans.json (cluster sizes over
the fitted vectors, inertia per iteration, re-seeded clusters). `centroids=FILE.npy` takes K x D centroids made
elsewhere instead of fitting (e.g. DiGIT's released ones; D must be the encoder's width). Every input is checked
before a feature is computed, and a failure leaves no half-written directory.
"""

from __future__ import annotations

import copy
import hashlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from flax import nnx

from ar_gen import config as config_lib, fileio, outputs
from ar_gen.data import pipeline, sources
from ar_gen.errors import UserError
from ar_gen.runs import frozen as frozen_lib
from ar_gen.runs import run as run_lib
from tokenizers import kmeans
from tokenizers.dinov2 import arch_sizes, block_index
from tokenizers.discriminative import DiscriminativeTokenizer


def _encoder_config(workdir: str) -> ml_collections.ConfigDict:
  config = config_lib.load_workdir_config(workdir)
  if config.task != "feature_encoder":
    raise UserError(f"--encoder {workdir} holds a {config.task!r} run; fit-kmeans clusters the features of a "
                    "feature encoder (task 'feature_encoder': `ar-gen convert-dinov2`, or an SSL encoder trained "
                    "with configs/mnist_ssl_encoder.py)")
  return config


def _given_centroids(path: str, dim: int, workdir: str) -> np.ndarray:
  if not fileio.isfile(path):
    raise UserError(f"--centroids {path}: no such file (a .npy array [K, D])")
  try:
    with fileio.open_file(path, "rb") as f:
      centroids = np.load(f, allow_pickle=False)
  except ValueError as e:
    raise UserError(f"--centroids {path} is not a .npy array: {e}") from e
  if centroids.ndim != 2 or centroids.shape[1] != dim:
    raise UserError(f"--centroids {path} holds an array of shape {list(centroids.shape)}; the encoder {workdir} "
                    f"gives features of dimension {dim}, so the centroids must be [K, {dim}]")
  if not np.all(np.isfinite(centroids)):
    raise UserError(f"--centroids {path} holds NaN or infinite values")
  return centroids.astype(np.float32)


def features(encoder, data: ml_collections.ConfigDict, source, layer: int, examples: int, seed: int,
             batch_size: int = 256) -> np.ndarray:
  """Patch features [examples * L, D] (float32) of `examples` random images of `source` at block `layer`."""
  run = jax.jit(lambda state, x: encoder.module(state).features(x, layer))
  rows = []
  batches = pipeline.eval_batches(data, batch_size, max_examples=examples, source=source, sample_seed=seed)
  for batch in tqdm.tqdm(batches, desc="fit-kmeans features", unit="batch", total=-(-examples // batch_size)):
    f_BLD = np.asarray(run(encoder.state, jnp.asarray(batch["image"])), np.float32)
    rows.append(f_BLD.reshape(-1, f_BLD.shape[-1]))
  return np.concatenate(rows)


def kmeans_config(encoder_config: ml_collections.ConfigDict, section: dict) -> ml_collections.ConfigDict:
  """OUT's config: the encoder's, with task `discriminative_tokenizer` and the `kmeans` section (the centroids'
  hash among it, so that the config's fingerprint, what stages 1 and 2 compare, names the centroids)."""
  config = copy.deepcopy(encoder_config)
  config.unlock()
  config.task = "discriminative_tokenizer"
  config.ema_decay = 0.0  # the copied weights are the encoder's exported (EMA if kept) ones
  config.encoder.layer = section.pop("layer")
  config.kmeans = section
  return config


def fit(encoder_workdir: str, spec: str, k: int, out: str, examples: int = 10000, vectors: int = 0,
        iters: int = 20, seed: int = 0, layer: int | None = None, centroids: str | None = None) -> dict:
  """Writes OUT (a discriminative tokenizer: the encoder and K centroids of its features) and OUT/kmeans.json."""
  encoder_config = _encoder_config(encoder_workdir)
  sizes = arch_sizes(encoder_config.encoder)
  layer = encoder_config.encoder.layer if layer is None else layer
  block_index(layer, sizes["depth"])
  given = None if centroids is None else _given_centroids(centroids, sizes["dim"], encoder_workdir)
  k = k if given is None else len(given)
  if k < 1 or examples < 1 or iters < 0 or vectors < 0:
    raise UserError(f"fit-kmeans needs --k >= 1, --examples >= 1, --iters >= 0, --vectors >= 0; got k={k}, "
                    f"examples={examples}, iters={iters}, vectors={vectors}")
  if fileio.exists(out) and (not fileio.isdir(out) or fileio.listdir(out)):
    raise UserError(f"--out {out} exists and is not an empty directory: a discriminative tokenizer goes into a new "
                    "one (nothing there is replaced)")
  sources.parse_spec(spec, "train")
  encoder = frozen_lib.load("encoder", encoder_workdir)
  source = sources.get_source(spec, "train", encoder_config.data.get("data_dir") or None)
  examples = min(examples, len(source))
  points_ND = features(encoder, encoder_config.data, source, layer, examples, seed)
  if vectors and vectors < len(points_ND):
    points_ND = points_ND[np.random.default_rng(seed).choice(len(points_ND), vectors, replace=False)]
  if given is None and len(points_ND) < k:
    raise UserError(f"--k {k} clusters need at least {k} feature vectors; {examples} images give {len(points_ND)}")
  result = kmeans.fit(points_ND, k, metric="euclidean", iters=iters if given is None else 0, seed=seed,
                      init="kmeans++" if given is None else given)
  centroids_KD = np.asarray(jax.device_get(result.centroids_KD), np.float32)
  sizes_K = np.asarray(result.counts_K).astype(np.int64)

  def fill(module: DiscriminativeTokenizer) -> DiscriminativeTokenizer:
    nnx.update(module.encoder, nnx.state(encoder.module()))
    module.centroids[...] = jnp.asarray(centroids_KD)
    return module

  section = dict(k=k, layer=layer, metric="euclidean", iters=iters if given is None else 0, seed=seed,
                 init="kmeans++" if given is None else "given", examples=examples, vectors=len(points_ND),
                 data=spec, given=centroids or "", source=encoder.identity,
                 centroids_sha256=hashlib.sha256(centroids_KD.tobytes()).hexdigest())
  config = kmeans_config(encoder_config, dict(section))
  report = {**section, "cluster_sizes": sizes_K.tolist(), "empty_clusters": int(np.sum(sizes_K == 0)),
            "inertia": np.asarray(result.inertia_T).tolist(), "final_inertia": float(result.final_inertia),
            "reseeded": np.asarray(result.reseeded_T).tolist()}
  written = [fileio.join(out, name) for name in ("config.json", "checkpoints", "kmeans.json")]
  with outputs.removed_on_failure(out, *written):
    run_lib.save_workdir(config, out, fill)
    fileio.write_json(fileio.join(out, "kmeans.json"), report)
  return {"out": fileio.absolute(out), **{key: report[key] for key in ("k", "layer", "examples", "vectors",
                                                                         "empty_clusters", "final_inertia")}}
