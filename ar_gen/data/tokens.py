"""`tokens:DIR` datasets: a tokenizer's tokens of a whole split, extracted once by `ar-gen extract-tokens`.

DIR holds `tokens.array_record` (one record per image: int32 token ids in raster order, then the int32 label)
and `meta.json` (grid, codebook size, tokenizer work directory and step, source dataset, count).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from array_record.python import array_record_data_source, array_record_module

RECORDS, META = "tokens.array_record", "meta.json"


class TokenSource:
  """Records {tokens: int32 [N], label: int} of an extracted token dataset."""

  is_tokens = True

  def __init__(self, directory: str):
    meta_path = os.path.join(directory, META)
    if not os.path.isfile(meta_path):
      raise FileNotFoundError(f"tokens:{directory}: {meta_path} is missing (write it with `ar-gen extract-tokens`)")
    with open(meta_path) as f:
      self.meta = json.load(f)
    self.num_classes = self.meta.get("num_classes")
    self._records = array_record_data_source.ArrayRecordDataSource([os.path.join(directory, RECORDS)])

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    values = np.frombuffer(self._records[index], np.int32)
    return {"tokens": values[:-1], "label": int(values[-1])}


def extract(tokenizer_workdir: str, spec: str, out: str, batch_size: int = 256) -> dict:
  """Encodes every image of dataset `spec` with the tokenizer's preprocessing; returns the meta data."""
  from ar_gen.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  from ar_gen.models.frozen_tokenizer import FrozenTokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = FrozenTokenizer(tokenizer_workdir)
  source = sources.get_source(spec, "train", tokenizer.config.data.get("data_dir") or None)
  encode = jax.jit(tokenizer.encode_flat)
  os.makedirs(out, exist_ok=True)
  tmp = os.path.join(out, RECORDS + ".tmp")
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  count = 0
  for batch in tqdm.tqdm(pipeline.eval_batches(tokenizer.config.data, batch_size, source=source),
                         desc="extract-tokens", unit="batch"):
    tokens = np.asarray(encode(tokenizer.state, jnp.asarray(batch["image"])), np.int32)
    for row, label in zip(tokens, batch["label"]):
      writer.write(np.concatenate([row, [np.int32(label)]]).astype(np.int32).tobytes())
    count += len(tokens)
  writer.close()
  os.replace(tmp, os.path.join(out, RECORDS))
  meta = {"grid": list(tokenizer.grid), "codebook_size": tokenizer.codebook_size, "num_examples": count,
          "tokenizer_workdir": os.path.abspath(tokenizer_workdir), "tokenizer_step": tokenizer.step,
          "dataset": spec, "num_classes": sources.num_classes(source)}
  with open(os.path.join(out, META), "w") as f:
    json.dump(meta, f, indent=2)
  return meta
