"""`tokens:DIR` datasets: a tokenizer's tokens of a whole split, extracted once by `ar-gen extract-tokens`.

DIR holds `tokens.array_record` (one record per image: the tokens of the tokenizer's layout in sequence order,
int32 ids or float32 vectors [L, D] flattened, then the int32 label) and `meta.json` (the layout, `ar_gen.layout.TokenLayout.to_json`; codebook size,
tokenizer work directory and step, source dataset, count). Writing is `ar_gen/commands/extract_tokens.py`.
DIR may be a bucket URL: array_record reads local files, so the records are copied once to a local cache
(`fileio.local_copy`, kept while the remote size is unchanged).
"""

from __future__ import annotations

import numpy as np
from array_record.python import array_record_data_source

from ar_gen import fileio
from ar_gen.layout import TokenLayout

RECORDS, META = "tokens.array_record", "meta.json"


def record_dtype(layout: TokenLayout):
  """The stored type of a layout's tokens: int32 ids or float32 vectors."""
  return np.int32 if layout.kind == "ids" else np.float32


class TokenSource:
  """Records {tokens: int32 [L] or float32 [L, D], label: int} of an extracted token dataset."""

  is_tokens = True

  def __init__(self, directory: str):
    meta_path = fileio.join(directory, META)
    if not fileio.isfile(meta_path):
      raise FileNotFoundError(f"tokens:{directory}: {meta_path} is missing (write it with `ar-gen extract-tokens`)")
    self.meta = fileio.read_json(meta_path)
    self.num_classes = self.meta.get("num_classes")
    layout = self.meta.get("layout")
    self.layout = TokenLayout.from_json(layout) if layout else None
    self._dtype = record_dtype(self.layout) if self.layout else np.int32
    records = fileio.local_copy(fileio.join(directory, RECORDS))
    self._records = array_record_data_source.ArrayRecordDataSource([records])

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    record = self._records[index]
    label = int(np.frombuffer(record[-4:], np.int32)[0])
    tokens = np.frombuffer(record[:-4], self._dtype)
    if self.layout is not None and self.layout.kind == "vectors":
      tokens = tokens.reshape(self.layout.token_shape())
    return {"tokens": tokens, "label": label}
