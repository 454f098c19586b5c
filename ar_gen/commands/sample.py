"""`ar-gen sample`: class-conditional images from a trained AR model of any registered family, written as
ADM-style samples.npz, one PNG per image and a grid.

Labels: `--classes 0,3,7` or `all`; the N images are split into equal consecutive blocks, one per listed class;
the grid shows one row per class (its first ten images). Generation is sharded over every device of every process
(`ar_gen.eval.generate`): the same flags give the same images on 1 device, on 8, or on 2 processes; process 0
writes the files.
"""

from __future__ import annotations

import jax

from ar_gen import outputs
from ar_gen.config import load_workdir_config
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.eval.generate import SAMPLE_RESULTS, generate, labels_for, parse_classes, write_samples
from ar_gen.runs.run import restore_run
from ar_gen.runs.task import family_names


def sample(workdir: str, out: str, num_images: int, batch_size: int = 64, classes: str = "all", seed: int = 0,
           overwrite: bool = False, **sampling_overrides) -> dict:
  """Samples `num_images` images; writes OUT/samples.npz, OUT/images/*.png and OUT/grid.png. Every flag, the
  work directory's task and `out` are checked before the model is loaded; an `out` holding earlier samples is
  refused unless `overwrite`, which removes them once the new images exist (`ar_gen.outputs`)."""
  if num_images < 1:
    raise ValueError(f"--num-images must be at least 1, got {num_images}")
  if batch_size < 1:
    raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
  config = load_workdir_config(workdir)
  if config.task not in family_names():
    raise ValueError(f"{workdir} holds a {config.task!r} run; `ar-gen sample` needs one of the families "
                     f"{family_names()}")
  SamplingConfig.from_config(config.sample, **sampling_overrides)  # bad flags fail before the model loads
  parse_classes(classes, config.model.num_classes)
  claim = outputs.claim_dir(out, SAMPLE_RESULTS, overwrite)
  run, state, step = restore_run(workdir)
  cfg = run.task.sampling_config(**sampling_overrides)
  labels = labels_for(parse_classes(classes, run.config.model.num_classes), num_images)
  samples, seconds, compile_seconds = generate(run, state, labels, seed=seed, batch_size=batch_size, cfg=cfg)
  claim.clear(primary=jax.process_index() == 0)  # the earlier samples go only now that the new ones exist
  write_samples(out, samples, labels, pngs=True)
  return {"num_images": num_images, "seconds": seconds, "images_per_second": num_images / seconds,
          "compile_seconds": compile_seconds, "step": step,
          "devices": jax.device_count(), "out": out}
