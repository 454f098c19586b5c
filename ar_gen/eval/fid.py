"""`ar-gen fid`: FID, Inception score, precision and recall of several sample sets against one reference, in one job.

Image sets (`--samples`, `--ref`):
- `FILE.npz`, ADM style: images uint8 [N, H, W, C] in `arr_0` (labels, if any, in `arr_1`), or precomputed
  statistics `mu` / `sigma` (FID only: IS, precision and recall need images);
- a folder of images (png, jpg, jpeg, bmp, webp; searched recursively, sorted). A file that cannot be decoded is
  skipped with a warning and counted in `skipped_files`; an empty folder is an error;
- a dataset spec: `tfds:NAME:SPLIT` or `bundled:mnist:SPLIT`, read through the data pipeline at `--image-size`
  (Inception) or the classifier's own size and padding (classifier features).
Grayscale images are repeated to RGB for Inception; sizes may differ within a set (each size goes through the
network as its own batches, whose input resize then matches pytorch-fid's per image).

Features (`--features`): `inception` (pool3, 2048; logits for IS; pytorch-fid's network, `inception.py`) or
`classifier:DIR` (the penultimate layer of an `ar-gen train`ed classifier, for data where Inception means nothing;
with labelled samples the classifier's accuracy on them is reported too). Feature extraction is jitted and runs in
fixed-size batches sharded over all local devices; with several processes each takes every P-th batch and the
features are gathered. Reference features and statistics are cached on disk, keyed by a hash of the reference's
content (file bytes; for dataset specs, the spec and data directory) and the feature extractor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image

from ar_gen import table
from ar_gen.eval import fid_stats

log = logging.getLogger("ar_gen.fid")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CACHE_DIR = os.path.join("~", ".cache", "ar_gen", "fid")


@dataclasses.dataclass
class ImageSet:
  """Images (a list: sizes may differ) with optional labels, or precomputed statistics only."""

  name: str
  images: list[np.ndarray] | None = None
  labels: np.ndarray | None = None
  stats: fid_stats.Stats | None = None
  skipped_files: list[str] = dataclasses.field(default_factory=list)
  content_key: str = ""


def _hash_files(paths: list[str]) -> str:
  digest = hashlib.sha256()
  for path in paths:
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  return digest.hexdigest()[:20]


def _load_npz(path: str) -> ImageSet:
  try:
    f = np.load(path)
  except (OSError, ValueError) as e:
    raise ValueError(f"{path}: not a readable .npz ({e})") from e
  with f:
    if "mu" in f.files and "sigma" in f.files:
      mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
      if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not [D] and [D, D]")
      return ImageSet(path, stats=fid_stats.Stats(mu, sigma, -1), content_key=_hash_files([path]))
    if "arr_0" not in f.files:
      raise ValueError(f"{path}: expected images in arr_0 (ADM layout) or mu and sigma, found {f.files}")
    images = f["arr_0"]
    labels = f["arr_1"] if "arr_1" in f.files else None
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
    raise ValueError(f"{path}: arr_0 must be uint8 images [N, H, W, 1 or 3], got {images.dtype} {images.shape}")
  if labels is not None and labels.shape != (len(images),):
    raise ValueError(f"{path}: arr_1 has shape {labels.shape}, expected one label per image ({len(images)},)")
  return ImageSet(path, list(images), labels, content_key=_hash_files([path]))


def _load_folder(path: str) -> ImageSet:
  files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                 if name.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise ValueError(f"{path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
  images, skipped = [], []
  for file in tqdm.tqdm(files, desc=f"read {os.path.basename(path.rstrip('/'))}", unit="img", leave=False):
    try:
      with open(file, "rb") as fh:
        image = Image.open(io.BytesIO(fh.read()))
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
      skipped.append(file)
      continue
    array = np.asarray(image.convert("L" if image.mode in ("L", "1", "I", "I;16", "F") else "RGB"))
    images.append(array[..., None] if array.ndim == 2 else array)
  if skipped:
    log.warning("%s: skipped %d unreadable image file(s), e.g. %s", path, len(skipped), skipped[:3])
  if not images:
    raise ValueError(f"{path}: none of its {len(files)} image files could be read")
  return ImageSet(path, images, skipped_files=skipped, content_key=_hash_files(files))


def _load_spec(spec: str, data: ml_collections.ConfigDict) -> ImageSet:
  """Every image of a dataset split (each process reads all of it), preprocessed as `data` says."""
  from ar_gen.data import preprocess, sources  # pylint: disable=g-import-not-at-top
  source = sources.get_source(spec, "test", data.get("data_dir") or None)
  images, labels = [], []
  for i in tqdm.tqdm(range(len(source)), desc=f"read {spec}", unit="img", leave=False):
    record = preprocess.preprocess(source[i], image_size=data.image_size, channels=data.channels,
                                   resize=data.get("resize", "crop"))
    images.append(preprocess.to_uint8(record["image"]))
    labels.append(int(record["label"]))
  settings = [spec, data.get("data_dir", ""), data.image_size, data.channels, data.get("resize", "crop")]
  key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:20]
  return ImageSet(spec, images, np.asarray(labels), content_key=key)


def load_image_set(spec: str, data: ml_collections.ConfigDict) -> ImageSet:
  """Reads one `--samples` / `--ref` argument (see the module docstring)."""
  if spec.split(":", 1)[0] in ("tfds", "bundled"):
    return _load_spec(spec, data)
  if os.path.isdir(spec):
    return _load_folder(spec)
  if spec.endswith(".npz"):
    if not os.path.exists(spec):
      raise FileNotFoundError(f"{spec}: no such file")
    return _load_npz(spec)
  raise FileNotFoundError(f"{spec}: not a folder, an .npz file or a tfds:/bundled: dataset spec")


@dataclasses.dataclass
class Extractor:
  """Batched features and logits of uint8 images; `data` says how dataset specs are read for it."""

  name: str
  fn: Callable  # (params, uint8 [B, H, W, C]) -> (features, logits)
  params: object
  data: ml_collections.ConfigDict
  channels: int
  size: int | None = None  # the one image size it takes, if any
  classifier: object = None


def inception_extractor(weights: str | None, image_size: int) -> Extractor:
  from ar_gen.eval import inception_weights  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(inception_weights.load(weights))

  def fn(params, images_BHWC):
    return nnx.merge(graphdef, params)(images_BHWC.astype(jnp.float32) / 255.0)

  data = ml_collections.ConfigDict(dict(eval="", data_dir="", image_size=image_size, channels=3, resize="crop",
                                        random_flip=False, num_threads=4, prefetch=8))
  return Extractor("inception", fn, state, data, channels=3)


def classifier_extractor(workdir: str) -> Extractor:
  from ar_gen.eval.classifier import Classifier  # pylint: disable=g-import-not-at-top
  classifier = Classifier(workdir)

  def fn(params, images_BHWC):
    return classifier.apply(params, images_BHWC.astype(jnp.float32) / 127.5 - 1)

  data = classifier.config.data
  return Extractor(f"classifier:{os.path.abspath(workdir)}", fn, classifier.state, data,
                   channels=data.channels, size=data.image_size, classifier=classifier)


def make_extractor(features: str, inception: str | None, image_size: int) -> Extractor:
  if features == "inception":
    return inception_extractor(inception, image_size)
  if features.startswith("classifier:"):
    return classifier_extractor(features.partition(":")[2])
  raise ValueError(f"--features must be 'inception' or 'classifier:DIR', got {features!r}")


def _match_channels(image_HWC: np.ndarray, channels: int) -> np.ndarray:
  if image_HWC.shape[-1] == channels:
    return image_HWC
  if channels == 3:
    return np.repeat(image_HWC, 3, axis=-1)
  return np.round(image_HWC.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None].astype(
      np.uint8)


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
  images = [_match_channels(im, extractor.channels) for im in images]
  wrong = [im.shape for im in images if extractor.size and im.shape[:2] != (extractor.size, extractor.size)]
  if wrong:
    raise ValueError(f"{desc}: {len(wrong)} images are not {extractor.size}x{extractor.size} (e.g. {wrong[0][:2]}), "
                     f"the only size {extractor.name} takes")
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


def inception_score(logits_NK: np.ndarray, splits: int = 10) -> tuple[float, float]:
  """exp(E_x KL(p(y|x) || p(y))) over `splits` equal parts: (mean, std).

  The rows are put in a fixed pseudo-random order (seed 0) before splitting: the standard code splits in file
  order, which assumes shuffled samples; class-ordered sample files (as `ar-gen sample --classes all` writes)
  would otherwise put one class in each split and score about 1.
  """
  if len(logits_NK) < splits:
    raise ValueError(f"the Inception score over {splits} splits needs at least {splits} images, got "
                     f"{len(logits_NK)}")
  logits_NK = logits_NK[np.random.default_rng(0).permutation(len(logits_NK))]
  logp = logits_NK - np.logaddexp.reduce(logits_NK, axis=1, keepdims=True)
  scores = []
  for part in np.array_split(logp, splits):
    log_marginal = np.log(np.exp(part).mean(axis=0))
    scores.append(np.exp(np.mean(np.sum(np.exp(part) * (part - log_marginal), axis=1))))
  return float(np.mean(scores)), float(np.std(scores))


@jax.jit
def _sq_dists(a_MF, b_NF):
  return jnp.maximum(jnp.sum(a_MF ** 2, 1)[:, None] + jnp.sum(b_NF ** 2, 1)[None] - 2 * a_MF @ b_NF.T, 0.0)


def _kth_radii(x_NF: np.ndarray, k: int, block: int) -> np.ndarray:
  """Squared distance of each row to its k-th nearest other row."""
  x = jnp.asarray(x_NF, jnp.float32)
  out = [np.asarray(-jax.lax.top_k(-_sq_dists(x[i:i + block], x), k + 1)[0][:, k])
         for i in range(0, len(x_NF), block)]
  return np.concatenate(out)


def _covered(points_MF: np.ndarray, centres_NF: np.ndarray, radii_N: np.ndarray, block: int) -> float:
  """Fraction of points inside at least one centre's k-NN ball."""
  c, r = jnp.asarray(centres_NF, jnp.float32), jnp.asarray(radii_N, jnp.float32)
  hits = [np.asarray(jnp.any(_sq_dists(jnp.asarray(points_MF[i:i + block], jnp.float32), c) <= r[None], axis=1))
          for i in range(0, len(points_MF), block)]
  return float(np.concatenate(hits).mean())


def precision_recall(real_NF: np.ndarray, fake_MF: np.ndarray, k: int = 3, block: int = 1024) -> tuple[float, float]:
  """Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour balls."""
  if min(len(real_NF), len(fake_MF)) <= k:
    raise ValueError(f"precision/recall with k={k} needs more than {k} images per set")
  precision = _covered(fake_MF, real_NF, _kth_radii(real_NF, k, block), block)
  recall = _covered(real_NF, fake_MF, _kth_radii(fake_MF, k, block), block)
  return precision, recall


def _reference(ref: ImageSet, extractor: Extractor, batch_size: int, cache_dir: str | None):
  """(stats, features or None) of the reference, from the cache when its content was seen before."""
  if ref.stats is not None:
    return ref.stats, None
  key = hashlib.sha256(f"{ref.content_key}|{extractor.name}".encode()).hexdigest()[:24]
  path = os.path.join(os.path.expanduser(cache_dir or CACHE_DIR), f"ref_{key}.npz")
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        log.info("reference features from the cache: %s", path)
        return fid_stats.Stats(f["mu"], f["sigma"], int(f["count"])), f["features"]
    except (OSError, ValueError, KeyError):
      log.warning("ignoring an unreadable cache file %s", path)
  features, _ = extract(extractor, ref.images, batch_size, "features ref")
  stats = fid_stats.statistics(features)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".tmp.npz", mu=stats.mu, sigma=stats.sigma, count=stats.count, features=features)
    os.replace(path + ".tmp.npz", path)
  return stats, features


def evaluate(samples: list[str], ref: str, features: str = "inception", inception: str | None = None,
             image_size: int = 256, batch_size: int = 200, k: int = 3, splits: int = 10,
             cache_dir: str | None = None, out: str | None = None) -> dict:
  """Scores every sample set against `ref`; prints a table and writes `out` (JSON) if given."""
  if not samples:
    raise ValueError("give at least one sample set (--samples)")
  extractor = make_extractor(features, inception, image_size)
  ref_set = load_image_set(ref, extractor.data)
  ref_stats, ref_features = _reference(ref_set, extractor, batch_size, cache_dir)
  rows = []
  for spec in samples:
    s = load_image_set(spec, extractor.data)
    row = {"samples": spec, "count": s.stats.count if s.images is None else len(s.images),
           "skipped_files": len(s.skipped_files)}
    if s.images is None:
      row["fid"] = fid_stats.frechet_distance(s.stats, ref_stats)
    else:
      feats, logits = extract(extractor, s.images, batch_size, f"features {os.path.basename(spec)}")
      row["fid"] = fid_stats.frechet_distance(fid_stats.statistics(feats), ref_stats)
      row["is_mean"], row["is_std"] = inception_score(logits, splits) if len(logits) >= splits else (None, None)
      if ref_features is not None:
        row["precision"], row["recall"] = precision_recall(ref_features, feats, k)
      if extractor.classifier is not None and s.labels is not None:
        row["accuracy"] = float(np.mean(logits.argmax(-1) == s.labels))
    rows.append(row)
  result = {"ref": ref, "ref_count": ref_stats.count, "ref_skipped_files": len(ref_set.skipped_files),
            "features": extractor.name, "k": k, "is_splits": splits, "results": rows}
  print(table.format_table(rows, [("samples", "samples", "s"), ("count", "N", "d"), ("fid", "FID", ".3f"),
                                  ("is_mean", "IS", ".3f"), ("precision", "precision", ".4f"),
                                  ("recall", "recall", ".4f"), ("accuracy", "accuracy", ".4f"),
                                  ("skipped_files", "skipped", "d")]))
  if out and jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      json.dump(result, f, indent=2)
  return result
