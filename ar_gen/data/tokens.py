"""`tokens:DIR` datasets: a tokenizer's tokens of a whole split, extracted once by `ar-gen extract-tokens`.

DIR holds `tokens.array_record` (one record per image: the int32 token ids of the tokenizer's layout, in sequence
order, then the int32 label) and `meta.json` (the layout, `ar_gen.layout.TokenLayout.to_json`; codebook size,
tokenizer work directory and step, source dataset, count). Writing is `ar_gen/commands/extract_tokens.py`.
DIR may be a bucket URL: array_record reads local files, so the records are copied once to a local cache
(`fileio.local_copy`, kept while the remote size is unchanged).
"""

from __future__ import annotations

import numpy as np
from array_record.python import array_record_data_source

from ar_gen import fileio

RECORDS, META = "tokens.array_record", "meta.json"


class TokenSource:
  """Records {tokens: int32 [N], label: int} of an extracted token dataset."""

  is_tokens = True

  def __init__(self, directory: str):
    meta_path = fileio.join(directory, META)
    if not fileio.isfile(meta_path):
      raise FileNotFoundError(f"tokens:{directory}: {meta_path} is missing (write it with `ar-gen extract-tokens`)")
    self.meta = fileio.read_json(meta_path)
    self.num_classes = self.meta.get("num_classes")
    records = fileio.local_copy(fileio.join(directory, RECORDS))
    self._records = array_record_data_source.ArrayRecordDataSource([records])

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    values = np.frombuffer(self._records[index], np.int32)
    return {"tokens": values[:-1], "label": int(values[-1])}
