"""Sharded class-conditional generation: a trained run's images for a list of labels, over every device.

`generate(run, state, labels_N, ...)` is what `ar-gen sample`, the in-training sample-quality evaluator and the
demo call. The N labels are cut into batches of `batch_size` (the last one padded with its last label); each batch
is one call of the family's `sample_images`, compiled once, its rows sharded over a 1-D mesh of all devices of all
processes (padded to a multiple of the device count with copies of the last label, dropped after), the model and
frozen states replicated, the images gathered to every process. Batch b draws from `fold_in(PRNGKey(seed), b)`
and random numbers are partitionable (a row's draws do not depend on the rows after it), so the images depend on
the seed, the labels and the batch size, not on how many devices or processes share the work, nor on which
subset of the batches a job computes (`batch_indices`: `ar-gen sample --num-shards`).

`write_samples` stores the images in a shuffled order (a fixed permutation of the seed and N, the labels moved
with their images): ADM's evaluator splits the Inception score in file order, so a class-sorted file would give a
deflated IS there.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import numpy as np
import tqdm
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ar_gen import fileio, images
from ar_gen.data.preprocess import to_uint8
from ar_gen.decoding import speculative_sampling
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.runs.run import Run


def parse_classes(text: str, num_classes: int) -> list[int]:
  """`all` or a comma-separated list of class ids, each checked against the model's class count."""
  if text == "all":
    return list(range(num_classes))
  try:
    classes = [int(c) for c in text.split(",") if c.strip()]
  except ValueError as e:
    raise ValueError(f"--classes must be 'all' or comma-separated integers, got {text!r}") from e
  bad = [c for c in classes if not 0 <= c < num_classes]
  if bad or not classes:
    raise ValueError(f"--classes {text!r}: class ids must lie in [0, {num_classes - 1}] (bad: {bad})")
  return classes


def labels_for(classes: list[int], num_images: int) -> np.ndarray:
  """Consecutive equal blocks of each class, e.g. 6 images of [1, 2] -> [1, 1, 1, 2, 2, 2]."""
  return np.asarray([classes[i * len(classes) // num_images] for i in range(num_images)], np.int32)


def class_grid(samples_NHWC: np.ndarray, labels_N: np.ndarray, per_row: int = 10) -> np.ndarray:
  """One row per class present (in order of first appearance), the first `per_row` samples of each."""
  rows = [samples_NHWC[labels_N == c][:per_row] for c in dict.fromkeys(labels_N.tolist())]
  width = max(len(r) for r in rows)
  blank = np.zeros_like(samples_NHWC[:1])
  tiles = [np.concatenate([r] + [blank] * (width - len(r))) for r in rows]
  return images.make_grid(np.concatenate(tiles), num_cols=width)


SAMPLE_RESULTS = ("samples.npz", "grid.png", "images")  # what write_samples puts in OUT


def file_order(num_images: int, seed: int) -> np.ndarray:
  """The permutation of generated images (in label order) into their order in samples.npz."""
  return np.random.default_rng([seed, num_images, 0x5A3B]).permutation(num_images)


def write_samples(out: str, samples_NHWC: np.ndarray, labels_N: np.ndarray, pngs: bool = False,
                  seed: int = 0) -> str:
  """OUT/samples.npz (ADM: arr_0 uint8 images, arr_1 labels, in the shuffled `file_order`), OUT/grid.png (one row
  per class) and, with `pngs`, OUT/images/NNNNNN_classC.png (N: the position in samples.npz), written by process
  0; returns the npz path."""
  path = fileio.join(out, "samples.npz")
  if jax.process_index() == 0:
    order = file_order(len(labels_N), seed)
    fileio.save_npz(path, arr_0=samples_NHWC[order], arr_1=labels_N[order])
    if pngs:
      for i in tqdm.tqdm(range(len(order)), desc="png", unit="img", disable=len(order) < 1000):
        images.save_png(samples_NHWC[order[i]], fileio.join(out, "images", f"{i:06d}_class{labels_N[order[i]]}.png"))
    images.save_png(class_grid(samples_NHWC, labels_N), fileio.join(out, "grid.png"))
  return path


def sampling_mesh() -> Mesh:
  """A 1-D mesh `batch` over every device of every process."""
  return Mesh(np.asarray(jax.devices()), ("batch",))


def device_batch_size(batch_size: int, num_devices: int) -> int:
  """`batch_size` rounded up to a multiple of the device count (the rows one sharded call computes)."""
  if batch_size < 1:
    raise ValueError(f"the batch size must be at least 1, got {batch_size}")
  return -(-batch_size // num_devices) * num_devices


def _put(tree: Any, sharding: NamedSharding) -> Any:
  """Global arrays with `sharding` from host or single-device values identical on every process, or from global
  arrays of another sharding (a training state, whatever its mesh's device order)."""
  def put(x):
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
      return x
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree)


class Speculative(NamedTuple):
  """Speculative decoding for `generate`: how, and the draft run with its state (None when draft-free); the
  target's task has checked them (`check_speculation`)."""

  how: speculative_sampling.Speculation
  run: Run | None = None
  state: dict | None = None


class Generated(NamedTuple):
  images: np.ndarray  # uint8 [N, H, W, C]
  seconds: float  # sampling, compilation excluded
  compile_seconds: float
  speculative: dict | None = None  # speculative_sampling.summarize of every batch (the real rows)


def num_batches(num_images: int, batch_size: int) -> int:
  return -(-num_images // batch_size)


def generate(run: Run, state: dict, labels_N: np.ndarray, *, seed: int = 0, batch_size: int = 64,
             cfg: SamplingConfig | None = None, progress: bool = True, cache: dict | None = None,
             batch_indices: list[int] | None = None, speculative: Speculative | None = None) -> Generated:
  """Images for class labels [N] on every process, or for the rows of the batches `batch_indices` only (in that
  order); `cache` (a dict the caller keeps) reuses the compiled sampler across calls with the same settings (an
  in-training evaluator); `speculative`: by speculative decoding, with its statistics."""
  jax.config.update("jax_threefry_partitionable", True)
  task = run.task
  cfg = cfg or task.sampling_config()
  labels_N = np.asarray(labels_N, np.int32)
  if labels_N.ndim != 1 or not len(labels_N):
    raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels_N.shape}")
  mesh = sampling_mesh()
  rows = device_batch_size(batch_size, mesh.size)
  replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
  graphdef, model_state = nnx.split(run.model(state))
  model_state = _put(model_state, replicated)
  frozen = _put(run.frozen_state, replicated) if run.frozen_state is not None else None
  key = jax.random.PRNGKey(seed)
  draft_run = speculative.run if speculative is not None else None
  draft_graphdef, draft_state = nnx.split(draft_run.model(speculative.state)) if draft_run else (None, None)
  draft_state = _put(draft_state, replicated) if draft_run else None

  def batch_labels(i: int) -> tuple[jax.Array, jax.Array]:
    """Labels of batch i, padded with its last label to `batch_size` (one compiled shape) and then to `rows`, and
    which rows are real."""
    lab = labels_N[i * batch_size:(i + 1) * batch_size]
    return (_put(np.concatenate([lab, np.full(rows - len(lab), lab[-1], np.int32)]), sharded),
            _put(np.arange(rows) < len(lab), sharded))

  def images_of(model_state, draft_state, frozen, labels_valid, rng):
    labels_B, valid_B = labels_valid
    model, cond = nnx.merge(graphdef, model_state), task.condition(labels_B)
    if speculative is None:
      return task.sample_images(model, cond, rng, frozen, cfg)[0], None
    draft = nnx.merge(draft_graphdef, draft_state) if draft_run else None
    return task.speculative_images(model, draft, draft_run.task if draft_run else None, cond, rng, frozen, cfg,
                                   speculative.how, valid_B)

  start = time.perf_counter()
  cache_key = (cfg, rows, tuple(d.id for d in mesh.devices.flat), speculative and speculative.how)
  fn = (cache or {}).get(cache_key)
  if fn is None:
    fn = jax.jit(images_of, out_shardings=replicated).lower(model_state, draft_state, frozen, batch_labels(0),
                                                            key).compile()
    if cache is not None:
      cache[cache_key] = fn
  compile_seconds = time.perf_counter() - start
  outs, stats, start = [], [], time.perf_counter()
  batch_indices = list(range(num_batches(len(labels_N), batch_size))) if batch_indices is None else batch_indices
  total = sum(min(batch_size, len(labels_N) - b * batch_size) for b in batch_indices)
  bar = tqdm.tqdm(total=total, unit="img", desc="sample", disable=not progress or jax.process_index() != 0)
  for b in batch_indices:
    x, batch_stats = fn(model_state, draft_state, frozen, batch_labels(b), jax.random.fold_in(key, b))
    stats.append(jax.device_get(batch_stats))
    count = min(batch_size, len(labels_N) - b * batch_size)
    outs.append(to_uint8(np.asarray(jax.device_get(x.addressable_data(0))))[:count])
    bar.update(count)
    bar.set_postfix({"images/s": f"{sum(len(o) for o in outs) / (time.perf_counter() - start):.2f}"})
  bar.close()
  seconds = time.perf_counter() - start
  summary = None
  if speculative is not None:
    total_stats = jax.tree.map(lambda *x: np.sum(x, axis=0), *stats)
    summary = speculative_sampling.summarize(total_stats, len(stats), task.layout.num_tokens)
  return Generated(np.concatenate(outs), seconds, compile_seconds, summary)
