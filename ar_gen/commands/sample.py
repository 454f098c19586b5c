"""`ar-gen sample`: class-conditional images from a trained AR model of any registered family, written as
ADM-style samples.npz, one PNG per image and a grid; `ar-gen merge-samples`: the shards of a sharded sampling
merged into the same files.

Labels: `--classes 0,3,7` or `all`; the N images are split into equal consecutive blocks, one per listed class,
and samples.npz holds them in a shuffled order (labels kept with their images; `generate.file_order`); the grid
shows one row per class (its first ten images). Generation is sharded over every device of every process
(`ar_gen.eval.generate`): the same flags give the same images on 1 device, on 8, or on 2 processes; process 0
writes the files.

Independent jobs (e.g. preemptible machines) split one sampling with `--num-shards K --shard-index I`: shard I
computes batches I, I + K, ... and writes `OUT/shards/shard-I-of-K.npz`; once all K exist, `ar-gen merge-samples
--out OUT` writes samples.npz, PNGs and the grid, identical to one job with the same flags. Each shard records
the flags, work directory and checkpoint step it used, and the merge refuses shards that disagree.

Speculative decoding (`--draft-workdir DIR` with a draft model trained on the same tokenizer, or `--jacobi`,
draft-free, for token ids; `--gamma N` drafts a window, `--prefill R` the fraction of tokens the target samples
alone first) gives samples of the target's distribution (docs/speculative.md) and writes OUT/speculative.json:
acceptance overall and per quarter of the sequence, tokens per target call, calls, fallbacks, speed.

The model is restored without optimizer state, straight into a copy on every device (no single-device hop), with
`--config.KEY=VALUE` overrides of the run's config (e.g. `model.attn_impl=xla`).
"""

from __future__ import annotations

import json

import jax
import numpy as np

from ar_gen import fileio, outputs
from ar_gen.config import load_workdir_config
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.decoding.speculative_sampling import Speculation, merge_summaries
from ar_gen.errors import UserError
from ar_gen.eval.generate import (SAMPLE_RESULTS, Speculative, generate, labels_for, num_batches, parse_classes,
                                  sampling_mesh, write_samples)
from ar_gen.runs.run import restore_run
from ar_gen.runs.task import family_names

SHARDS = "shards"
SPECULATIVE = "speculative.json"


def shard_name(index: int, count: int) -> str:
  return f"{SHARDS}/shard-{index:05d}-of-{count:05d}.npz"


def _check_shards(num_shards: int, shard_index: int | None) -> None:
  if num_shards < 1:
    raise UserError(f"--num-shards must be at least 1, got {num_shards}")
  if num_shards > 1 and shard_index is None:
    raise UserError(f"--num-shards {num_shards} needs --shard-index (0 .. {num_shards - 1})")
  if shard_index is not None and not 0 <= shard_index < num_shards:
    raise UserError(f"--shard-index must lie in [0, {num_shards - 1}], got {shard_index}")


def _speculation(draft_workdir: str | None, gamma: int | None, prefill: float | None,
                 jacobi: bool) -> Speculation | None:
  """The speculation the flags ask for (None: plain sampling), checked."""
  if draft_workdir is not None and jacobi:
    raise UserError("--draft-workdir and --jacobi exclude each other: --jacobi decodes without a draft model")
  if draft_workdir is None and not jacobi:
    if gamma is not None or prefill is not None:
      raise UserError("--gamma and --prefill are settings of speculative decoding: add --draft-workdir DIR (a "
                      "draft model) or --jacobi (draft-free)")
    return None
  try:
    return Speculation(gamma=4 if gamma is None else gamma, prefill=prefill or 0.0, jacobi=jacobi)
  except ValueError as e:
    raise UserError(str(e)) from e


def sample(workdir: str, out: str, num_images: int, batch_size: int = 64, classes: str = "all", seed: int = 0,
           overwrite: bool = False, overrides: tuple[str, ...] = (), num_shards: int = 1,
           shard_index: int | None = None, draft_workdir: str | None = None, gamma: int | None = None,
           prefill: float | None = None, jacobi: bool = False, **sampling_overrides) -> dict:
  """Samples `num_images` images (or one shard of them); writes OUT/samples.npz, OUT/images/*.png and OUT/grid.png
  (a shard: OUT/shards/shard-I-of-K.npz). Every flag, the work directory's task and `out` are checked before the
  model is loaded; an `out` holding earlier results is refused unless `overwrite`, which removes them once the new
  images exist (`ar_gen.outputs`). With a speculation (`draft_workdir` or `jacobi`), also OUT/speculative.json
  (a shard: its .speculative.json next to its .npz in OUT/shards/)."""
  if num_images < 1:
    raise ValueError(f"--num-images must be at least 1, got {num_images}")
  if batch_size < 1:
    raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
  _check_shards(num_shards, shard_index)
  if num_shards > num_batches(num_images, batch_size):
    raise UserError(f"--num-shards {num_shards} is more than the {num_batches(num_images, batch_size)} batches of "
                    f"--num-images {num_images} at --batch-size {batch_size}: use fewer shards or smaller batches")
  config = load_workdir_config(workdir, overrides)
  if config.task not in family_names():
    raise ValueError(f"{workdir} holds a {config.task!r} run; `ar-gen sample` needs one of the families "
                     f"{family_names()}")
  SamplingConfig.from_config(config.sample, **sampling_overrides)  # bad flags fail before the model loads
  parse_classes(classes, config.model.num_classes)
  how = _speculation(draft_workdir, gamma, prefill, jacobi)
  if draft_workdir is not None:
    draft_config = load_workdir_config(draft_workdir)
    if draft_config.task not in family_names():
      raise UserError(f"--draft-workdir {draft_workdir} holds a {draft_config.task!r} run, not a generator")
  sharded = shard_index is not None
  results = (shard_name(shard_index, num_shards),) if sharded else SAMPLE_RESULTS
  stats_name = results[0].replace(".npz", "." + SPECULATIVE) if sharded else SPECULATIVE
  claim = outputs.claim_dir(out, results + (stats_name,), overwrite)  # a plain run also replaces old statistics
  replicated = jax.sharding.NamedSharding(sampling_mesh(), jax.sharding.PartitionSpec())
  run, state, step = restore_run(workdir, overrides=overrides, sharding=replicated)
  speculative, draft_step = None, None
  if how is not None:
    draft = restore_run(draft_workdir, sharding=replicated) if draft_workdir is not None else None
    run.task.check_speculation(how, draft[0].task if draft else None)
    draft_step = draft[2] if draft else None
    speculative = Speculative(how, *(draft[:2] if draft else ()))
  cfg = run.task.sampling_config(**sampling_overrides)
  labels = labels_for(parse_classes(classes, run.config.model.num_classes), num_images)
  batches = list(range(num_batches(num_images, batch_size)))[shard_index or 0::num_shards]
  generated = generate(run, state, labels, seed=seed, batch_size=batch_size, cfg=cfg, batch_indices=batches,
                       speculative=speculative)
  claim.clear(primary=jax.process_index() == 0)  # the earlier results go only now that the new ones exist
  settings = None if how is None else {
      "method": "jacobi" if how.jacobi else "draft", "gamma": how.gamma, "prefill": how.prefill,
      "draft_workdir": fileio.absolute(draft_workdir) if draft_workdir else None, "draft_step": draft_step}
  if sharded:
    index = np.concatenate([np.arange(b * batch_size, min((b + 1) * batch_size, num_images)) for b in batches])
    meta = {"workdir": fileio.absolute(workdir), "step": step, "num_images": num_images, "batch_size": batch_size,
            "classes": classes, "seed": seed, "sampling": repr(cfg), "overrides": list(overrides),
            "num_shards": num_shards, "speculative": settings}
    if jax.process_index() == 0:
      fileio.save_npz(fileio.join(out, results[0]), images=generated.images, labels=labels[index], index=index,
                      meta=np.asarray(json.dumps(meta, sort_keys=True)))
  else:
    write_samples(out, generated.images, labels, pngs=True, seed=seed)
  count = len(generated.images)
  if how is not None and jax.process_index() == 0:
    record = {**settings, "workdir": fileio.absolute(workdir), "step": step, "batch_size": batch_size,
              "num_images": count,
              "seconds": generated.seconds, "images_per_second": count / generated.seconds,
              "sampling": repr(cfg), **generated.speculative}
    fileio.write_json(fileio.join(out, stats_name), record)
  return {"num_images": count, "seconds": generated.seconds, "images_per_second": count / generated.seconds,
          "images_per_second_per_device": count / generated.seconds / jax.device_count(),
          "compile_seconds": generated.compile_seconds, "step": step, "devices": jax.device_count(),
          "out": fileio.join(out, results[0]) if sharded else fileio.absolute(out)}


def merge(out: str, overwrite: bool = False) -> dict:
  """Merges OUT/shards/*.npz (all K shards of one sampling) into OUT/samples.npz, OUT/images/ and OUT/grid.png;
  shards of speculative decoding (the same settings, checked) also into OUT/speculative.json."""
  directory = fileio.join(out, SHARDS)
  names = sorted(n for n in fileio.listdir(directory) if n.endswith(".npz")) if fileio.isdir(directory) else []
  if not names:
    raise UserError(f"{directory} holds no shards: run `ar-gen sample ... --num-shards K --shard-index I --out {out}`"
                    " for every I first")
  shards = [fileio.load_npz(fileio.join(directory, n)) for n in names]
  metas = [json.loads(str(s["meta"])) for s in shards]
  count = metas[0]["num_shards"]
  differing = sorted({k for m in metas for k in m if m.get(k) != metas[0].get(k)})
  if differing:
    raise UserError(f"the shards in {directory} come from different samplings (they differ in {differing}); "
                    "sample them again with the same flags")
  missing = sorted(set(shard_name(i, count).split("/")[1] for i in range(count)) - set(names))
  if missing:
    raise UserError(f"{directory} lacks {len(missing)} of {count} shards: {missing[:5]}")
  settings = metas[0].get("speculative")
  stats_paths = [fileio.join(directory, n.replace(".npz", "." + SPECULATIVE)) for n in names]
  if settings and not all(fileio.exists(p) for p in stats_paths):
    raise UserError(f"the shards in {directory} were sampled speculatively, but some lack their statistics: "
                    f"{[p for p in stats_paths if not fileio.exists(p)][:3]}")
  claim = outputs.claim_dir(out, SAMPLE_RESULTS + (SPECULATIVE,) if settings else SAMPLE_RESULTS, overwrite)
  num_images = metas[0]["num_images"]
  index = np.concatenate([s["index"] for s in shards])
  if sorted(index.tolist()) != list(range(num_images)):
    raise UserError(f"the shards in {directory} do not cover images 0 .. {num_images - 1} exactly once")
  images_NHWC = np.empty((num_images, *shards[0]["images"].shape[1:]), np.uint8)
  labels_N = np.empty(num_images, np.int32)
  for s in shards:
    images_NHWC[s["index"]], labels_N[s["index"]] = s["images"], s["labels"]
  claim.clear()
  path = write_samples(out, images_NHWC, labels_N, pngs=True, seed=metas[0]["seed"])
  if settings:
    records = [fileio.read_json(p) for p in stats_paths]
    seconds = sum(r["seconds"] for r in records)
    fileio.write_json(fileio.join(out, SPECULATIVE), {
        **settings, "workdir": metas[0]["workdir"], "step": metas[0]["step"], "batch_size": metas[0]["batch_size"],
        "num_images": num_images, "shards": count, "seconds": seconds, "images_per_second": num_images / seconds,
        "sampling": metas[0]["sampling"], **merge_summaries(records)})
  return {"num_images": num_images, "shards": count, "out": path}
