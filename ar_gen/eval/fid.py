"""`ar-gen fid`: FID, Inception score, precision and recall of several sample sets against one reference, in one job.

The pieces: `image_sets.py` reads `--samples` / `--ref` (npz images or statistics, image folders, dataset specs),
`features.py` builds the `--features` extractor (`inception` or `classifier:DIR`) and runs it sharded over devices,
`fid_stats.py` computes the statistics and the Fréchet distance, `metrics.py` the Inception score and precision /
recall. This module runs them and prints and writes the table. Reference features and statistics are cached on
disk, keyed by a hash of the reference's content (file bytes; for dataset specs, the spec, data directory and
preprocessing, and a `folder:` spec's file bytes) and
the feature extractor. With labelled samples and classifier features the classifier's accuracy on them is
reported too.

The reference, as ADM's evaluator takes it: a reference npz holding both images (`arr_0`) and `mu` / `sigma` (ADM's
reference batches: statistics of the whole dataset, 10,000 of its images) gives FID against the file's statistics
(`"ref_stats": "file mu/sigma"`), and precision / recall and the reference's own IS from features of its images;
the Fréchet distance between the file's and the recomputed statistics is reported as `ref_stats_check`. Without
`mu` / `sigma` the statistics come from the images (`"computed"`). A reference of statistics only gives FID alone:
a warning says so and the results carry `precision_recall_unavailable` (the rows' `precision` / `recall` are null).

Bad input is refused before any work, naming what is wrong: an `out` that is a directory, exists (unless
`overwrite`) or lies in a file (`ar_gen.outputs.claim_file`), a sample set or reference that does not exist or
cannot be an image set, and, with classifier features, sample labels outside the classifier's classes. Every file
goes through `ar_gen.fileio`: `ref`, `out` and the cache may be bucket URLs. The results JSON is written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

import jax
import numpy as np

from ar_gen import fileio, outputs, table
from ar_gen.eval import fid_stats, image_sets
from ar_gen.eval.features import Extractor, extract, make_extractor
from ar_gen.eval.image_sets import ImageSet
from ar_gen.eval.metrics import inception_score, precision_recall

log = logging.getLogger("ar_gen.fid")
CACHE_DIR = "~/.cache/ar_gen/fid"
NO_REF_IMAGES = "the reference holds mu/sigma only; precision and recall need reference images (arr_0)"


@dataclasses.dataclass
class Reference:
  """What the sample sets are scored against: FID statistics, and features and logits when it has images."""

  stats: fid_stats.Stats
  stats_source: str  # "file mu/sigma" or "computed"
  count: int | None  # the images the features come from; None without images
  features_NF: np.ndarray | None = None
  logits_NK: np.ndarray | None = None
  stats_check: dict | None = None  # the file's statistics against those of its images (both present)


def _ref_features(ref: ImageSet, extractor: Extractor, batch_size: int, cache_dir: str | None):
  """(features, logits) of the reference's images, from the cache when its content was seen before."""
  key = hashlib.sha256(f"{ref.content_key}|{extractor.name}".encode()).hexdigest()[:24]
  path = fileio.join(cache_dir or CACHE_DIR, f"ref_{key}.npz")
  if fileio.exists(path):
    try:
      cached = fileio.load_npz(path)
      log.info("reference features from the cache: %s", path)
      return cached["features"], cached["logits"]
    except (*image_sets.NPZ_ERRORS, KeyError):
      log.warning("ignoring an unreadable or older cache file %s", path)
  features, logits = extract(extractor, ref.images, batch_size, "features ref")
  if jax.process_index() == 0:
    fileio.save_npz(path, features=features, logits=logits)
  return features, logits


def _reference(ref: ImageSet, extractor: Extractor, batch_size: int, cache_dir: str | None) -> Reference:
  """The reference's statistics (the file's when it has them) and, with images, its features and logits."""
  if ref.images is None:
    log.warning("%s: FID only; %s", ref.name, NO_REF_IMAGES)
    return Reference(ref.stats, "file mu/sigma", None)
  features, logits = _ref_features(ref, extractor, batch_size, cache_dir)
  if ref.stats is None:
    return Reference(fid_stats.statistics(features), "computed", len(features), features, logits)
  check = _stats_check(ref.stats, fid_stats.statistics(features))
  log.info("%s: FID against the file's mu/sigma; precision/recall from features of its %d images; FID(file "
           "mu/sigma, recomputed) = %.4f", ref.name, len(features), check["fid_file_vs_computed"])
  return Reference(ref.stats, "file mu/sigma", len(features), features, logits, check)


def _stats_check(file_stats: fid_stats.Stats, computed: fid_stats.Stats) -> dict:
  """The file's statistics against those recomputed from its images: near 0 only when the file's come from the
  same images through the same network (ADM's come from the whole dataset: see docs/fid.md)."""
  return {"fid_file_vs_computed": fid_stats.frechet_distance(file_stats, computed), "computed_count": computed.count,
          "mu_max_abs_diff": float(np.max(np.abs(file_stats.mu - computed.mu))),
          "sigma_max_abs_diff": float(np.max(np.abs(file_stats.sigma - computed.sigma)))}


def _inception_score(logits_NK: np.ndarray, splits: int) -> tuple[float | None, float | None]:
  return inception_score(logits_NK, splits) if len(logits_NK) >= splits else (None, None)


def _check_sample_labels(samples: list[str], extractor: Extractor) -> None:
  """Refuses, before any features are computed, sample labels outside the classifier's classes."""
  for spec in samples:
    image_sets.check_labels(spec, image_sets.declared_labels(spec, extractor.data), extractor.num_classes)


def _metrics(s: ImageSet, extractor: Extractor, ref: Reference, batch_size: int, k: int, splits: int) -> dict:
  """FID, IS, precision / recall and the classifier's accuracy of a set of images."""
  feats, logits = extract(extractor, s.images, batch_size, f"features {fileio.basename(s.name)}")
  row = {"fid": fid_stats.frechet_distance(fid_stats.statistics(feats), ref.stats)}
  row["is_mean"], row["is_std"] = _inception_score(logits, splits)
  row["precision"], row["recall"] = (None, None) if ref.features_NF is None else precision_recall(ref.features_NF,
                                                                                                   feats, k)
  if extractor.classifier is not None and s.labels is not None:
    row["accuracy"] = float(np.mean(logits.argmax(-1) == s.labels))
  return row


def _score(spec: str, extractor: Extractor, ref: Reference, batch_size: int, k: int, splits: int) -> dict:
  """The results row of one sample set; an error names the set."""
  s = image_sets.load_image_set(spec, extractor.data)
  row = {"samples": spec, "count": s.stats.count if s.images is None else len(s.images),
         "skipped_files": len(s.skipped_files)}
  if extractor.num_classes is not None:
    image_sets.check_labels(spec, s.labels, extractor.num_classes)
  try:
    if s.images is None:
      row["fid"] = fid_stats.frechet_distance(s.stats, ref.stats)
    else:
      row.update(_metrics(s, extractor, ref, batch_size, k, splits))
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
  reference = _reference(ref_set, extractor, batch_size, cache_dir)
  rows = [_score(spec, extractor, reference, batch_size, k, splits) for spec in samples]
  result = {"ref": ref, "ref_count": reference.count, "ref_skipped_files": len(ref_set.skipped_files),
            "ref_stats": reference.stats_source, "features": extractor.name, "k": k, "is_splits": splits}
  if reference.stats_check is not None:
    result["ref_stats_check"] = reference.stats_check
  if reference.logits_NK is None:
    result["precision_recall_unavailable"] = NO_REF_IMAGES
  else:
    result["ref_is_mean"], result["ref_is_std"] = _inception_score(reference.logits_NK, splits)
  result["results"] = rows
  print(table.format_table(rows, [("samples", "samples", "s"), ("count", "N", "d"), ("fid", "FID", ".3f"),
                                  ("is_mean", "IS", ".3f"), ("precision", "precision", ".4f"),
                                  ("recall", "recall", ".4f"), ("accuracy", "accuracy", ".4f"),
                                  ("skipped_files", "skipped", "d")]))
  if out and jax.process_index() == 0:
    fileio.write_json(out, result)
  return result
