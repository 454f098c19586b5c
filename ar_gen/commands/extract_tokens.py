"""`ar-gen extract-tokens`: encode a dataset once with a trained tokenizer into a `tokens:DIR` dataset.

The tokenizer is loaded as a frozen component (`ar_gen.runs.frozen`), the images are prepared with its data
settings, and each record is its layout's tokens (int32 ids, or float32 vectors of a KL tokenizer) plus the label
(`ar_gen.data.tokens`); `meta.json` records the layout, so readers never re-derive it.
"""

from __future__ import annotations

import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from array_record.python import array_record_module

from ar_gen import fileio, outputs
from ar_gen.data import pipeline, sources
from ar_gen.data.tokens import META, RECORDS, record_dtype
from ar_gen.runs import frozen as frozen_lib


def _write_records(tokenizer, source, batch_size: int, path: str) -> int:
  """Encodes every image of `source` into the array_record file `path`; returns the count. Token vectors that are
  not finite (a diverged tokenizer) are refused, naming the first such image."""
  encode = jax.jit(lambda state, x: tokenizer.module(state).encode(x))
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  count = 0
  dtype = record_dtype(tokenizer.layout)
  for batch in tqdm.tqdm(pipeline.eval_batches(tokenizer.config.data, batch_size, source=source),
                         desc="extract-tokens", unit="batch"):
    tokens = np.asarray(encode(tokenizer.state, jnp.asarray(batch["image"])), dtype)
    if not np.all(np.isfinite(tokens)):
      bad = int(np.argmin(np.all(np.isfinite(tokens.reshape(len(tokens), -1)), axis=1)))
      writer.close()
      raise ValueError(f"the tokenizer {tokenizer.source} gives non-finite (NaN or inf) latents for image "
                       f"{count + bad} of the dataset: no token set is written (is the tokenizer diverged?)")
    for row, label in zip(tokens, batch["label"]):
      writer.write(row.reshape(-1).tobytes() + np.int32(label).tobytes())
    count += len(tokens)
  writer.close()
  return count


def extract(tokenizer_workdir: str, spec: str, out: str, batch_size: int = 256, overwrite: bool = False) -> dict:
  """Encodes every image of dataset `spec` with the tokenizer's preprocessing; returns the meta data. An `out`
  that already holds a token set is refused unless `overwrite` (`ar_gen.outputs`: removed once every input is
  checked); meta.json is written last, so a crash leaves no directory that reads as a token set."""
  if batch_size < 1:
    raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
  sources.parse_spec(spec, "train")
  claim = outputs.claim_dir(out, (META, RECORDS), overwrite)
  tokenizer = frozen_lib.load("tokenizer", tokenizer_workdir)
  tokenizer.check_exports("tokenizer")
  layout = tokenizer.layout
  source = sources.get_source(spec, "train", tokenizer.config.data.get("data_dir") or None)
  out = claim.clear()  # every input checked: the earlier token set goes now
  with tempfile.TemporaryDirectory(prefix=".tmp-tokens-", dir=None if fileio.is_url(out) else out) as local_dir:
    tmp = os.path.join(local_dir, RECORDS)  # array_record writes local files: moved into `out` when complete
    count = _write_records(tokenizer, source, batch_size, tmp)
    if fileio.is_url(out):
      fileio.copy_file(tmp, fileio.join(out, RECORDS))
    else:
      os.replace(tmp, fileio.join(out, RECORDS))
  meta = {"layout": layout.to_json(), "grid": list(layout.grid), "codebook_size": layout.vocab_size,
          "num_examples": count, "tokenizer": tokenizer.identity, "dataset": spec,
          "num_classes": sources.num_classes(source)}
  fileio.write_json(fileio.join(out, META), meta)
  return meta
