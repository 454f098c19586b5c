"""`ar-gen sample`: class-conditional images from a trained AR model, written as ADM-style samples.npz,
one PNG per image and a grid.

Labels: `--classes 0,3,7` or `all`; the N images are split into equal consecutive blocks, one per listed class;
the grid shows one row per class (its first ten images). Each batch uses the seed
`fold_in(seed, batch index)`: the same flags give the same images.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from flax import nnx

from ar_gen import images
from ar_gen.data.preprocess import to_uint8
from ar_gen.models.next_token_task import sampling_config
from ar_gen.train import trainer

SAMPLING_TASKS = ("next_token", "next_scale")


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


def sample(workdir: str, out: str, num_images: int, batch_size: int = 64, classes: str = "all", seed: int = 0,
           **sampling_overrides) -> dict:
  """Samples `num_images` images; writes OUT/samples.npz, OUT/images/*.png and OUT/grid.png."""
  if num_images < 1:
    raise ValueError(f"--num-images must be at least 1, got {num_images}")
  if batch_size < 1:
    raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
  run, state, step = trainer.restore_run(workdir)
  if run.config.task not in SAMPLING_TASKS:
    raise ValueError(f"{workdir} holds a {run.config.task!r} run; `ar-gen sample` needs one of {SAMPLING_TASKS}")
  task, model = run.task, run.model(state)
  cfg = sampling_config(run.config.sample, **sampling_overrides)
  class_list = parse_classes(classes, model.num_classes)
  labels = labels_for(class_list, num_images)
  graphdef, model_state = nnx.split(model)
  fn = jax.jit(lambda s, frozen, lab, rng: task.sample_images(nnx.merge(graphdef, s), lab, rng,
                                                               frozen, cfg)[0])
  rng = jax.random.PRNGKey(seed)
  outs, start = [], time.perf_counter()
  bar = tqdm.tqdm(total=num_images, unit="img", desc="sample")
  for b, i in enumerate(range(0, num_images, batch_size)):
    lab = labels[i:i + batch_size]
    padded = np.concatenate([lab, np.full(batch_size - len(lab), lab[-1], np.int32)])  # one compiled shape
    x = np.asarray(fn(model_state, task.frozen, jnp.asarray(padded), jax.random.fold_in(rng, b)))[:len(lab)]
    outs.append(to_uint8(x))
    bar.update(len(lab))
    bar.set_postfix({"images/s": f"{sum(len(o) for o in outs) / (time.perf_counter() - start):.2f}"})
  bar.close()
  seconds = time.perf_counter() - start
  samples = np.concatenate(outs)
  os.makedirs(os.path.join(out, "images"), exist_ok=True)
  np.savez(os.path.join(out, "samples.npz"), arr_0=samples, arr_1=labels)
  for i, (image, label) in enumerate(zip(samples, labels)):
    images.save_png(image, os.path.join(out, "images", f"{i:06d}_class{label}.png"))
  images.save_png(class_grid(samples, labels), os.path.join(out, "grid.png"))
  return {"num_images": num_images, "seconds": seconds, "images_per_second": num_images / seconds, "step": step,
          "out": out}
