"""`ar-gen fid`: FID, Inception score, precision and recall of several sample sets against one reference, in one job.

The pieces: `image_sets.py` reads `--samples` / `--ref` (npz images or statistics, image folders, dataset specs),
`features.py` builds the `--features` extractor (`inception` or `classifier:DIR`) and runs it sharded over devices,
`fid_stats.py` computes the statistics and the Fréchet distance, `metrics.py` the Inception score and precision /
recall. This module runs them and prints and writes the table. Reference features and statistics are cached on
disk, keyed by a hash of the reference's content (file bytes; for dataset specs, the spec, data directory and
preprocessing, and a `folder:` spec's file bytes) and
the feature extractor. With labelled samples and classifier features the classifier's accuracy on them is
reported too.

Bad input is refused before any work, naming what is wrong: an `out` that is a directory, exists (unless
`overwrite`) or lies in a file (`ar_gen.outputs.claim_file`), a sample set or reference that does not exist or
cannot be an image set, and, with classifier features, sample labels outside the classifier's classes. The results
JSON is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import jax
import numpy as np

from ar_gen import outputs, table
from ar_gen.eval import fid_stats, image_sets
from ar_gen.eval.features import Extractor, extract, make_extractor
from ar_gen.eval.image_sets import ImageSet
from ar_gen.eval.metrics import inception_score, precision_recall

log = logging.getLogger("ar_gen.fid")
CACHE_DIR = os.path.join("~", ".cache", "ar_gen", "fid")


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
    except (*image_sets.NPZ_ERRORS, KeyError):
      log.warning("ignoring an unreadable cache file %s", path)
  features, _ = extract(extractor, ref.images, batch_size, "features ref")
  stats = fid_stats.statistics(features)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".tmp.npz", mu=stats.mu, sigma=stats.sigma, count=stats.count, features=features)
    os.replace(path + ".tmp.npz", path)
  return stats, features


def _write_json(result: dict, out: str) -> None:
  """Writes `out` atomically: a temporary file in its folder, then renamed over it."""
  os.makedirs(os.path.dirname(out), exist_ok=True)
  tmp = f"{out}.tmp{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      json.dump(result, f, indent=2)
      f.write("\n")
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _check_sample_labels(samples: list[str], extractor: Extractor) -> None:
  """Refuses, before any features are computed, sample labels outside the classifier's classes."""
  for spec in samples:
    image_sets.check_labels(spec, image_sets.declared_labels(spec, extractor.data), extractor.num_classes)


def _metrics(s: ImageSet, extractor: Extractor, ref_stats: fid_stats.Stats, ref_features, batch_size: int, k: int,
             splits: int) -> dict:
  """FID, IS, precision / recall and the classifier's accuracy of a set of images."""
  feats, logits = extract(extractor, s.images, batch_size, f"features {os.path.basename(s.name)}")
  row = {"fid": fid_stats.frechet_distance(fid_stats.statistics(feats), ref_stats)}
  row["is_mean"], row["is_std"] = inception_score(logits, splits) if len(logits) >= splits else (None, None)
  if ref_features is not None:
    row["precision"], row["recall"] = precision_recall(ref_features, feats, k)
  if extractor.classifier is not None and s.labels is not None:
    row["accuracy"] = float(np.mean(logits.argmax(-1) == s.labels))
  return row


def _score(spec: str, extractor: Extractor, ref_stats: fid_stats.Stats, ref_features, batch_size: int, k: int,
           splits: int) -> dict:
  """The results row of one sample set; an error names the set."""
  s = image_sets.load_image_set(spec, extractor.data)
  row = {"samples": spec, "count": s.stats.count if s.images is None else len(s.images),
         "skipped_files": len(s.skipped_files)}
  if extractor.num_classes is not None:
    image_sets.check_labels(spec, s.labels, extractor.num_classes)
  try:
    if s.images is None:
      row["fid"] = fid_stats.frechet_distance(s.stats, ref_stats)
    else:
      row.update(_metrics(s, extractor, ref_stats, ref_features, batch_size, k, splits))
  except ValueError as e:
    raise ValueError(f"{spec}: {e}") from e
  return row


def evaluate(samples: list[str], ref: str, features: str = "inception", inception: str | None = None,
             image_size: int = 256, batch_size: int = 200, k: int = 3, splits: int = 10,
             cache_dir: str | None = None, out: str | None = None, *, overwrite: bool = False) -> dict:
  """Scores every sample set against `ref`; prints a table and writes `out` (JSON) if given."""
  if not samples:
    raise ValueError("give at least one sample set (--samples)")
  if out:
    out = outputs.claim_file(out, overwrite)
  for spec in [*samples, ref]:
    image_sets.check_spec(spec)
  extractor = make_extractor(features, inception, image_size)
  if extractor.num_classes is not None:
    _check_sample_labels(samples, extractor)
  ref_set = image_sets.load_image_set(ref, extractor.data)
  ref_stats, ref_features = _reference(ref_set, extractor, batch_size, cache_dir)
  rows = [_score(spec, extractor, ref_stats, ref_features, batch_size, k, splits) for spec in samples]
  result = {"ref": ref, "ref_count": ref_stats.count, "ref_skipped_files": len(ref_set.skipped_files),
            "features": extractor.name, "k": k, "is_splits": splits, "results": rows}
  print(table.format_table(rows, [("samples", "samples", "s"), ("count", "N", "d"), ("fid", "FID", ".3f"),
                                  ("is_mean", "IS", ".3f"), ("precision", "precision", ".4f"),
                                  ("recall", "recall", ".4f"), ("accuracy", "accuracy", ".4f"),
                                  ("skipped_files", "skipped", "d")]))
  if out and jax.process_index() == 0:
    _write_json(result, out)
  return result
