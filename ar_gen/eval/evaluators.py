"""In-training evaluators chosen by name from the config (`config.evals`), as big_vision does it.

`config.evals` maps a name to a section with `kind` (a key of `EVALUATORS`) and `every_steps` (0 = never during
training); the trainer runs each due evaluator on the current state (EMA weights if kept) after a step and at the
last step, writes its numbers to `metrics.jsonl` and TensorBoard as `NAME/KEY`, and the demo reads them from there.

`sample_quality` (section defaults: `ar_gen.config.sample_quality_eval`): `num_images` samples (classes
`classes`, equal blocks, seed `seed`, batch `batch_size`, the run's `sample` settings) from
`ar_gen.eval.generate` (the sampler compiled once per evaluator), written to `DIR/evals/NAME_STEP/samples.npz` and
`grid.png`, then `ar-gen fid`'s computation against `ref` with `features` (`inception` or `classifier:DIR`): fid,
precision, recall, accuracy of the classifier on the samples' labels (where the features are a classifier's),
images/s (compilation excluded) and the evaluation's seconds.

`reconstruction` (`num_images` of `data.eval` in batches of `batch_size`, seed `seed`): the task's
`reconstruct(model, images, rng, frozen)` (e.g. the discriminative family's pixel decoder drawing images from the
true ids of real ones) against the images: mean PSNR (dB, on [0, 1]) and, beside it, the PSNR of the frozen
tokenizer's own reconstruction (its upper bound: `tokenizer_psnr`); with `features` = `classifier:DIR` (empty: none)
also that classifier's `accuracy` on the reconstructions (does the class survive?). Each process scores its share
of the images; `DIR/evals/NAME_STEP/grid.png` shows the first `grid_examples` images over their reconstructions.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from ar_gen import fileio
from ar_gen import images as images_lib
from ar_gen.data import pipeline
from ar_gen.distributed import all_processes
from ar_gen.eval import fid, image_sets
from ar_gen.eval.classifier import Classifier
from ar_gen.eval.generate import generate, labels_for, parse_classes, write_samples
from tokenizers.losses import psnr


def check_features(key: str, features: str, kinds: tuple[str, ...]) -> None:
  """Refuses a `features` spec that is none of `kinds` (`inception`, `classifier:DIR`) or names a directory that
  holds no trained classifier."""
  kind, _, directory = features.partition(":")
  if kind == "classifier" and not fileio.isfile(fileio.join(directory, "config.json")):
    raise FileNotFoundError(f"{key}.features={features!r}: {directory} is not a trained classifier's work "
                            "directory (no config.json)")
  if kind not in kinds:
    raise ValueError(f"{key}.features={features!r}: " + " or ".join(k + (":DIR" if k == "classifier" else "")
                                                                    for k in kinds))


@dataclasses.dataclass
class SampleQuality:
  """FID / precision / recall / classifier accuracy of the run's samples."""

  name: str
  section: ml_collections.ConfigDict
  workdir: str
  compiled: dict = dataclasses.field(default_factory=dict)  # the sampler, compiled once for every evaluation

  def check(self, config: ml_collections.ConfigDict) -> None:
    """Refuses, naming the key, what would fail at the first evaluation (maybe hours into the training); an
    evaluator that is off (every_steps 0) is not checked."""
    s, key = self.section, f"evals.{self.name}"
    if s.every_steps <= 0:
      return
    if not s.ref:
      raise ValueError(f"{key}.ref is empty: set it to the reference images (e.g. bundled:mnist:test)")
    try:
      image_sets.check_spec(s.ref)
      parse_classes(s.classes, config.model.num_classes)
    except (ValueError, FileNotFoundError) as e:
      raise ValueError(f"{key}: {e}") from None
    check_features(key, s.features, ("inception", "classifier"))
    if min(s.num_images, s.batch_size, s.fid_batch_size) < 1:
      raise ValueError(f"{key}: num_images, batch_size and fid_batch_size must be at least 1")

  def due(self, step: int, last_step: int) -> bool:
    every = self.section.every_steps
    return every > 0 and (step % every == 0 or step == last_step)

  def __call__(self, run, state, step: int) -> dict[str, float]:
    s = self.section
    labels = labels_for(parse_classes(s.classes, run.config.model.num_classes), s.num_images)
    start = time.perf_counter()
    generated = generate(run, state, labels, seed=s.seed, batch_size=s.batch_size, progress=False,
                         cache=self.compiled)
    out = fileio.join(self.workdir, "evals", f"{self.name}_{step:07d}")
    path = write_samples(out, generated.images, labels, seed=s.seed)
    multihost_utils.sync_global_devices(f"evals/{self.name}/{step}")
    scores = fid.evaluate([path], s.ref, s.features, batch_size=s.fid_batch_size,
                          cache_dir=fileio.join(self.workdir, "fid_cache"), out=fileio.join(out, "fid.json"),
                          overwrite=True)  # a resumed run evaluates this step again
    row = scores["results"][0]
    result = {k: row[k] for k in ("fid", "precision", "recall", "accuracy") if row.get(k) is not None}
    result["images_per_second"] = s.num_images / generated.seconds  # compilation excluded
    result["seconds"] = time.perf_counter() - start  # the whole evaluation: compilation, sampling, features
    return result


@dataclasses.dataclass
class Reconstruction:
  """PSNR of the task's `reconstruct` on held-out images (see the module docstring)."""

  name: str
  section: ml_collections.ConfigDict
  workdir: str

  def check(self, config: ml_collections.ConfigDict) -> None:
    s, key = self.section, f"evals.{self.name}"
    if s.every_steps <= 0:
      return
    if min(s.num_images, s.batch_size) < 1:
      raise ValueError(f"{key}: num_images and batch_size must be at least 1")
    if s.features:
      check_features(key, s.features, ("classifier",))

  def due(self, step: int, last_step: int) -> bool:
    every = self.section.every_steps
    return every > 0 and (step % every == 0 or step == last_step)

  def __call__(self, run, state, step: int) -> dict[str, float]:
    task, s = run.task, self.section
    if not hasattr(task, "reconstruct"):
      raise ValueError(f"evals.{self.name}: task {run.config.task} has no reconstruct (images from their own "
                       "tokens); the discriminative family's pixel decoder has one")
    start = time.perf_counter()
    graphdef, model_state = nnx.split(run.model(state))

    @jax.jit
    def reconstruct(model_state, frozen, images, rng):
      model = nnx.merge(graphdef, model_state)
      decoded = task.decode_images(task.tokenizer_module(frozen).encode(images), frozen)
      ours = task.reconstruct(model, images, rng, frozen)
      return ours, psnr(ours, images), psnr(decoded, images)

    judge = Classifier(s.features.partition(":")[2]) if s.features else None
    model_psnr, tokenizer_psnr, correct, real_shown, ours_shown = [], [], [], [], []
    key = jax.random.PRNGKey(s.seed)
    for i, batch in enumerate(pipeline.eval_batches(run.config.data, s.batch_size, max_examples=s.num_images)):
      images = jnp.asarray(batch["image"])
      ours, mine, theirs = reconstruct(model_state, run.frozen_state, images, jax.random.fold_in(key, i))
      model_psnr.append(np.asarray(mine)), tokenizer_psnr.append(np.asarray(theirs))
      if judge is not None:
        correct.append(judge.predict(np.asarray(ours)) == np.asarray(batch["label"]))
      take = s.grid_examples - len(real_shown)
      real_shown.extend(np.asarray(images[:take])), ours_shown.extend(np.asarray(ours[:take]))
    result = {"psnr": float(np.mean(all_processes(np.concatenate(model_psnr)))),
              "tokenizer_psnr": float(np.mean(all_processes(np.concatenate(tokenizer_psnr))))}
    if judge is not None:
      result["accuracy"] = float(np.mean(all_processes(np.concatenate(correct))))
    if jax.process_index() == 0 and real_shown:
      out = fileio.join(self.workdir, "evals", f"{self.name}_{step:07d}")
      images_lib.save_png(images_lib.make_grid(np.stack(real_shown + ours_shown), num_cols=len(real_shown)),
                          fileio.join(out, "grid.png"))
    result["seconds"] = time.perf_counter() - start
    return result


EVALUATORS = {"sample_quality": SampleQuality, "reconstruction": Reconstruction}


def from_config(config: ml_collections.ConfigDict, workdir: str) -> list:
  """The evaluators of `config.evals` (none if the config has no such section), each checked against the config
  (the trainer builds them before its first step)."""
  evaluators = []
  for name, section in (config.get("evals") or {}).items():
    if section.get("kind") not in EVALUATORS:
      raise ValueError(f"evals.{name}.kind={section.get('kind')!r}: known kinds are {sorted(EVALUATORS)}")
    evaluator = EVALUATORS[section.kind](name, section, workdir)
    evaluator.check(config)
    evaluators.append(evaluator)
  return evaluators
