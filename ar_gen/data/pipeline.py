"""grain input pipelines: sharded by process, deterministic for a seed, with checkpointable iterator state.

The training pipeline is an infinite, per-epoch reshuffled `MapDataset` turned into an iterator with prefetching
threads; its `get_state()` is saved with each checkpoint and `set_state()` resumes it exactly. The order of
examples and their augmentations are those of one process: the global batch b is examples [b * G, (b + 1) * G) of
the shuffled stream, whatever the process count, and process p loads (and preprocesses) only its contiguous
`G / process_count` of them, so a run on 2 hosts sees the batches a run on 1 host sees. Evaluation data is
sharded `index % process_count == process_index`.
"""

from __future__ import annotations

import functools
from typing import Iterator

import grain
import jax
import ml_collections
import numpy as np

from ar_gen.data import preprocess, sources


def _prep_kwargs(data: ml_collections.ConfigDict) -> dict:
  return dict(image_size=data.image_size, channels=data.channels, resize=data.get("resize", "crop"))


def per_process_batch(global_batch: int) -> int:
  """The batch each process loads; the global batch must split evenly."""
  count = jax.process_count()
  if global_batch % count:
    raise ValueError(f"batch_size={global_batch} must be a multiple of the process count {count}")
  return global_batch // count


def _shard(ds: grain.MapDataset) -> grain.MapDataset:
  return ds[jax.process_index()::jax.process_count()]


def open_split(data: ml_collections.ConfigDict, which: str) -> sources.Source:
  """Opens `data.train` or `data.eval` (a dataset spec) with the config's data_dir."""
  default_split = "train" if which == "train" else "test"
  return sources.get_source(data[which], default_split, data.get("data_dir") or None)


def _token_record(record: dict, rng=None) -> dict[str, np.ndarray]:
  del rng
  tokens = record["tokens"]  # int32 ids or float32 vectors, as stored
  return {"tokens": np.asarray(tokens, np.float32 if tokens.dtype == np.float32 else np.int32),
          "label": np.int32(record["label"])}


def train_dataset(data: ml_collections.ConfigDict, batch_size: int, seed: int,
                  source: sources.Source | None = None) -> grain.IterDataset:
  """Infinite shuffled, augmented, batched training data for this process."""
  source = source if source is not None else open_split(data, "train")
  prep = functools.partial(preprocess.preprocess, **_prep_kwargs(data), flip=data.get("random_flip", False))
  if getattr(source, "is_tokens", False):
    prep = _token_record
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  ds = ds.random_map(lambda record, rng: prep(record, rng=rng))
  ds = ds.batch(per_process_batch(batch_size), drop_remainder=True)  # lazy: chunks of the global stream
  ds = ds[jax.process_index()::jax.process_count()]  # this process's chunk of every global batch
  options = grain.ReadOptions(num_threads=data.get("num_threads", 4), prefetch_buffer_size=data.get("prefetch", 8))
  return ds.to_iter_dataset(options)


def eval_batches(data: ml_collections.ConfigDict, batch_size: int, max_examples: int | None = None,
                 source: sources.Source | None = None,
                 sample_seed: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """One pass over `data.eval` (its first `max_examples`; with `sample_seed`, that many drawn at random without
  replacement, the same on every process) for this process, the last batch possibly smaller."""
  source = source if source is not None else open_split(data, "eval")
  prep = functools.partial(preprocess.preprocess, **_prep_kwargs(data))
  if getattr(source, "is_tokens", False):
    prep = _token_record
  ds = grain.MapDataset.source(source)
  if sample_seed is not None:
    ds = ds.seed(sample_seed).shuffle()
  if max_examples is not None:  # the first examples of the split, whatever the process count
    ds = ds[:max_examples]
  ds = _shard(ds).map(prep).batch(batch_size, drop_remainder=False)
  options = grain.ReadOptions(num_threads=data.get("num_threads", 4), prefetch_buffer_size=data.get("prefetch", 8))
  return iter(ds.to_iter_dataset(options))
