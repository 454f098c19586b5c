"""`ar-gen fid`: FID, Inception score, precision and recall of several sample sets against one reference, in one job.

The pieces: `image_sets.py` reads `--samples` / `--ref` (npz images or statistics, image folders, dataset specs),
`features.py` builds the `--features` extractor (`inception` or `classifier:DIR`) and runs it sharded over devices,
`fid_stats.py` computes the statistics and the Fréchet distance, `metrics.py` the Inception score and precision /
recall. This module runs them and prints and writes the table. Reference features and statistics are cached on
disk, keyed by a hash of the reference's content (file bytes; for dataset specs, the spec and data directory) and
the feature extractor. With labelled samples and classifier features the classifier's accuracy on them is
reported too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import jax
import numpy as np

from ar_gen import table
from ar_gen.eval import fid_stats
from ar_gen.eval.features import Extractor, extract, make_extractor
from ar_gen.eval.image_sets import ImageSet, load_image_set
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
