"""`make demo` / `ar-gen demo`: the main job on the bundled MNIST, on CPU: train, sample, evaluate, compare families.

Stages: `tokenizers` (VQ and LFQ; `tokenizer_vq` alone is a stage too), `classifier` (the MNIST classifier, the
judge of samples), one stage per registered family (`ar_gen/families`: `next_token`, `next_scale`, ...) and one per
group of families (`Family.demo_group`: `continuous` is the classifier, `mar` and `mar_raster`). A
family stage trains its demo tokenizer (`Family.demo_tokenizer`; a VQ or LFQ one comes from the tokenizer stages),
extracts that tokenizer's tokens of the training split once, trains the family's MNIST config on them, and its
in-training sample-quality evaluator (`ar_gen/eval/evaluators.py`, the same one any run can enable) samples 1000
images at the last step, 100 per class, and scores them with the classifier: `sample_accuracy`, `fid`, `precision`,
`recall` in the classifier's feature space, images/s. Every piece of work is one `ar-gen` process (train,
eval-tokenizer, extract-tokens), started as soon as what it needs is done, a few side by side (one training alone
keeps about 1.4 of 2 cores busy); logs go to `OUT/logs/`. The headline numbers go to `OUT/summary.json` (one entry
per stage with its `workdir`), and the families are compared side by side in one table, printed and written to
`OUT/families.md`. `make demo` runs the `default` stages (all but the LFQ tokenizer and the families that declare
`in_make_demo=False`, next-frequency and the continuous ones, to fit 15 minutes);
`--stages all` runs every stage; `--quick` runs each config's `:runlocal` variant. An OUT that holds an earlier
demo's results is refused unless `--overwrite` (`make demo` passes it: it replaces its own runs/demo).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from ar_gen import config as config_lib
from ar_gen import outputs, table
from ar_gen.data import pipeline, preprocess
from ar_gen.eval import spectrum
from ar_gen.eval.classifier import Classifier
from ar_gen.families._registry import registered
from ar_gen.layout import TokenLayout
from ar_gen.train import metrics_log

TOKENIZER_CONFIGS = {"tokenizer_vq": "mnist_vq.py", "tokenizer_lfq": "mnist_lfq.py"}
STAGE_GROUPS = {"tokenizers": ("tokenizer_vq", "tokenizer_lfq"), "tokenizer_vq": ("tokenizer_vq",)}
MAX_PARALLEL = 4
EVAL = "sample_quality"


def family_groups() -> dict[str, tuple[str, ...]]:
  """{group stage: the classifier and the group's families} of the families that declare a `demo_group`."""
  groups: dict[str, tuple[str, ...]] = {}
  for name, family in registered().items():
    if family.demo_group:
      groups[family.demo_group] = groups.get(family.demo_group, ("classifier",)) + (name,)
  return groups


def stage_names() -> tuple[str, ...]:
  return ("tokenizers", "tokenizer_vq", "classifier", *registered(), *family_groups())


def parse_stages(text: str) -> tuple[str, ...]:
  """`all`, `default` (all but the LFQ tokenizer) or a comma-separated list of stages, checked for what they need."""
  families = tuple(registered())
  if text == "all":
    return ("tokenizers", "classifier", *families)
  if text == "default":
    return ("tokenizer_vq", "classifier", *(name for name, f in registered().items() if f.in_make_demo))
  groups = family_groups()
  named = [s.strip() for s in text.split(",") if s.strip()]
  stages = tuple(dict.fromkeys(t for s in named for t in groups.get(s, (s,))))
  unknown = [s for s in stages if s not in stage_names()]
  if unknown or not named:
    raise ValueError(f"unknown demo stages {unknown}; choose from {stage_names()}, 'default' or 'all'")
  provided = {t for s in stages for t in STAGE_GROUPS.get(s, ())}
  for name in families:
    if name not in stages:
      continue
    tokenizer = registered()[name].demo_tokenizer
    if tokenizer in TOKENIZER_CONFIGS and tokenizer not in provided:
      raise ValueError(f"the {name} stage needs the tokenizers (or {tokenizer}) stage in the same run")
    if "classifier" not in stages:
      raise ValueError(f"the {name} stage needs the classifier stage in the same run")
  return stages


# ------------------------------------------------------------------------------------------------- jobs
class Jobs:
  """`ar-gen` subprocesses with dependencies, at most MAX_PARALLEL at once; output to LOGS/NAME.log."""

  def __init__(self, logs: str):
    self.logs, self.pending, self.running, self.seconds = logs, {}, {}, {}
    os.makedirs(logs, exist_ok=True)

  def add(self, name: str, args: list[str], after: tuple[str, ...] = ()) -> None:
    self.pending[name] = (args, after)

  def _start(self, name: str) -> None:
    args, _ = self.pending.pop(name)
    log = open(os.path.join(self.logs, f"{name}.log"), "w")
    process = subprocess.Popen([sys.executable, "-m", "ar_gen.cli", *args], stdout=log, stderr=subprocess.STDOUT)
    self.running[name] = (process, log, time.perf_counter())
    print(f"== started {name}", flush=True)

  def run(self) -> dict[str, float]:
    """Runs every job; returns each one's wall seconds. A failed job stops the others and raises naming its log."""
    unknown = {a for _, after in self.pending.values() for a in after} - set(self.pending)
    if unknown:
      raise ValueError(f"demo jobs wait for jobs that were never added: {sorted(unknown)}")
    while self.pending or self.running:
      for name in [n for n, (_, after) in self.pending.items() if all(a in self.seconds for a in after)]:
        if len(self.running) < MAX_PARALLEL:
          self._start(name)
      for name, (process, log, start) in list(self.running.items()):
        if process.poll() is None:
          continue
        log.close()
        del self.running[name]
        if process.returncode:
          for other, _, _ in self.running.values():
            other.kill()
          with open(log.name) as f:
            tail = "".join(f.readlines()[-5:])
          raise RuntimeError(f"{name} failed (exit {process.returncode}); see {log.name}:\n{tail}")
        self.seconds[name] = time.perf_counter() - start
        print(f"== {name} done in {self.seconds[name]:.0f} s", flush=True)
      time.sleep(0.5)
    return self.seconds


def _train_args(config_file: str, workdir: str, quick: bool, overrides: list[str] = ()) -> list[str]:
  config = os.path.join(config_lib.CONFIG_DIR, config_file) + (":runlocal" if quick else "")
  return ["train", "--config", config, "--workdir", workdir, *[f"--config.{o}" for o in overrides]]


# ------------------------------------------------------------------------------------------------- results
def _write(path: str, text: str) -> None:
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def tokenizer_result(workdir: str, seconds: float) -> dict:
  with open(os.path.join(workdir, "eval.json")) as f:
    result = json.load(f)
  keep = ("psnr", "ssim", "codebook_usage", "perplexity", "psnr_by_scales")
  return {**{k: result[k] for k in keep if k in result}, "train_seconds": seconds, "workdir": workdir}


def _spectrum(images_NHWC: np.ndarray) -> dict:
  """The low / mid / high power fractions and the radial profile of an image set (`ar_gen.eval.spectrum`)."""
  result = spectrum.summarize(images_NHWC)
  return {k: result[k] for k in ("low", "mid", "high", "profile")}


def classifier_result(workdir: str, seconds: float) -> dict:
  """The classifier's held-out accuracy, and the held-out images' spectrum: the data row of the spectral table."""
  classifier = Classifier(workdir)
  batches = list(pipeline.eval_batches(classifier.config.data, 500))
  images = np.concatenate([b["image"] for b in batches])
  accuracy = classifier.accuracy(images, np.concatenate([b["label"] for b in batches]))
  return {"heldout_accuracy": accuracy, "spectrum": _spectrum(preprocess.to_uint8(images)),
          "train_seconds": seconds, "workdir": workdir}


def family_result(workdir: str, num_samples: int, family) -> dict:
  """The family run's last sample-quality numbers (metrics.jsonl), its layout, its sampler's steps and the spectrum
  of the evaluator's samples."""
  rows = [r for r in metrics_log.read_metrics(workdir) if f"{EVAL}/fid" in r]
  if not rows:
    raise RuntimeError(f"{workdir}/metrics.jsonl has no {EVAL} numbers")
  row, step = rows[-1], rows[-1]["step"]
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  with open(os.path.join(workdir + "_tokens", "meta.json")) as f:  # the stage's extraction of its demo tokenizer
    layout = TokenLayout.from_json(json.load(f)["layout"])
  out = os.path.join(workdir, "evals", f"{EVAL}_{step:07d}")
  with np.load(os.path.join(out, "samples.npz")) as samples:
    sample_spectrum = _spectrum(samples["arr_0"])
  return {"sample_accuracy": row[f"{EVAL}/accuracy"], "fid": row[f"{EVAL}/fid"],
          "precision": row[f"{EVAL}/precision"], "recall": row[f"{EVAL}/recall"],
          "images_per_second": row[f"{EVAL}/images_per_second"], "eval_seconds": row[f"{EVAL}/seconds"],
          "num_samples": num_samples,
          "tokens_per_image": layout.num_tokens,
          "steps_per_image": family.sampler_steps(config, layout) if family.sampler_steps else layout.num_groups,
          "spectrum": sample_spectrum, "grid": os.path.join(out, "grid.png"),
          "fid_json": os.path.join(out, "fid.json"), "workdir": workdir, **_reconstruction(workdir)}


def _reconstruction(workdir: str) -> dict:
  """The last `reconstruction` evaluator numbers of a run that has one (the discriminative family's pixel decoder
  from true ids): `recon_psnr`, `tokenizer_psnr` of its VQ and the classifier's `recon_accuracy` on them."""
  rows = [r for r in metrics_log.read_metrics(workdir) if "reconstruction/psnr" in r]
  last = rows[-1] if rows else {}
  names = {"recon_psnr": "psnr", "tokenizer_psnr": "tokenizer_psnr", "recon_accuracy": "accuracy"}
  return {ours: last[f"reconstruction/{key}"] for ours, key in names.items() if f"reconstruction/{key}" in last}


FAMILY_COLUMNS = [("family", "family", "s"), ("tokens_per_image", "tokens/image", "d"),
                  ("steps_per_image", "AR steps/image", "d"), ("sample_accuracy", "sample accuracy", ".3f"),
                  ("fid", "FID", ".2f"), ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
                  ("images_per_second", "images/s", ".1f"), ("train_seconds", "train s", ".0f")]


SPECTRUM_COLUMNS = [("set", "image set", "s"), ("low", "low", ".4f"), ("mid", "mid", ".4f"), ("high", "high", ".4f")]


def families_table(summary: dict) -> str:
  """The families of this run side by side, as a Markdown table."""
  rows = [{"family": name, **summary[name]} for name in registered() if name in summary]
  return table.format_table(rows, FAMILY_COLUMNS, markdown=True)


def spectrum_table(summary: dict) -> str:
  """The power fractions at low / mid / high frequency of the held-out data and each family's samples."""
  rows = [{"set": "data (held out)", **summary["classifier"]["spectrum"]}] if "classifier" in summary else []
  rows += [{"set": name, **summary[name]["spectrum"]} for name in registered() if name in summary]
  return table.format_table(rows, SPECTRUM_COLUMNS, markdown=True)


def _report(out: str, summary: dict, stage: str) -> None:
  numbers = {k: v for k, v in summary[stage].items() if isinstance(v, float)}
  print(f"== {stage}: " + ", ".join(f"{k}={v:.4g}" for k, v in numbers.items()), flush=True)
  _write(os.path.join(out, "summary.json"), json.dumps(summary, indent=2))


# ------------------------------------------------------------------------------------------------- the job
def run(out: str = "runs/demo", quick: bool = False, stages: str = "default", overwrite: bool = False) -> dict:
  """Runs the demo's stages into `out`; an `out` holding an earlier demo's results is refused unless `overwrite`
  (which removes exactly those: the stages' work dirs and token sets, logs/, summary.json, families.md)."""
  stages = parse_stages(stages)
  workdir = lambda name: os.path.abspath(os.path.join(out, name))
  families = {name: f for name, f in registered().items() if name in stages}
  tokenizers = {t: TOKENIZER_CONFIGS[t] for s in stages for t in STAGE_GROUPS.get(s, ())}
  tokenizers.update({f.demo_tokenizer: f.demo_tokenizer_config for f in families.values()})
  train_args = lambda config_file, where, overrides: _train_args(config_file, where, quick, overrides)
  preludes = {name: f.demo_prelude(workdir, train_args) for name, f in families.items() if f.demo_prelude}
  results = (*tokenizers, *(["classifier"] if "classifier" in stages else []), *families,
             *(f"{name}_tokens" for name in families), *(r for p in preludes.values() for r in p.results), "logs",
             "summary.json", "families.md")
  outputs.claim_dir(out, results, overwrite).clear()
  jobs = Jobs(os.path.join(out, "logs"))
  for name, config_file in tokenizers.items():
    jobs.add(name, _train_args(config_file, workdir(name), quick))
  if "classifier" in stages:
    jobs.add("classifier", _train_args("mnist_classifier.py", workdir("classifier"), quick))
  num_samples = 100 if quick else 1000
  for name, family in families.items():
    tokens_dir = workdir(name) + "_tokens"
    jobs.add(f"extract_{name}", ["extract-tokens", "--workdir", workdir(family.demo_tokenizer), "--data",
                                 "bundled:mnist:train", "--out", tokens_dir], after=(family.demo_tokenizer,))
    overrides = {"frozen.tokenizer": workdir(family.demo_tokenizer), "data.train": f"tokens:{tokens_dir}",
                 f"evals.{EVAL}.features": f"classifier:{workdir('classifier')}",
                 f"evals.{EVAL}.num_images": num_samples,
                 f"evals.{EVAL}.every_steps": _total_steps(family.demo_config, quick)}
    after = (f"extract_{name}", "classifier")
    if name in preludes:
      for job in preludes[name].jobs:
        jobs.add(*job)
      overrides.update(preludes[name].overrides)
      after += preludes[name].after
    jobs.add(name, _train_args(family.demo_config, workdir(name), quick, [f"{k}={v}" for k, v in overrides.items()]),
             after=after)
  for name in tokenizers:  # after the extractions and trainings that wait for the same tokenizer: off the critical path
    jobs.add(f"eval_{name}", ["eval-tokenizer", "--workdir", workdir(name)], after=(name,))
  seconds = jobs.run()

  summary = {}
  for name in tokenizers:
    summary[name] = tokenizer_result(workdir(name), seconds[name])
    _report(out, summary, name)
  if "classifier" in stages:
    summary["classifier"] = classifier_result(workdir("classifier"), seconds["classifier"])
    _report(out, summary, "classifier")
  for name in families:
    result = family_result(workdir(name), num_samples, families[name])
    summary[name] = {**result, "train_seconds": seconds[name] - result["eval_seconds"],
                     "extract_seconds": seconds[f"extract_{name}"]}
    if name in preludes:  # e.g. coarse-to-fine's stage 1: the seconds of each job before the family's training
      summary[name]["prelude_seconds"] = {job[0]: seconds[job[0]] for job in preludes[name].jobs}
    _report(out, summary, name)
  if families:
    text = families_table(summary) + "\n\nPower at low / mid / high spatial frequency (`ar-gen spectrum`):\n\n" + \
        spectrum_table(summary)
    _write(os.path.join(out, "families.md"), "# The families of this demo run, side by side\n\n" + text + "\n")
    print("== families (" + os.path.join(out, "families.md") + ")\n" + text, flush=True)
  print(f"== summary: {os.path.join(out, 'summary.json')}")
  return summary


def _total_steps(config_file: str, quick: bool) -> int:
  path = os.path.join(config_lib.CONFIG_DIR, config_file) + (":runlocal" if quick else "")
  return int(config_lib.load_config(path).total_steps)
