"""`make demo` / `ar-gen demo`: the main job on the bundled MNIST, on CPU: train, sample, evaluate, summarise.

Stages: `tokenizers` (VQ and LFQ), `classifier` (the MNIST classifier, the judge of samples), `next_token`
(the VQ tokens of the training split are extracted once, a class-conditional next-token model trains on them and
samples 1000 images with guidance, 100 per class; the classifier's accuracy on them is `sample_accuracy`, and
`fid` / `precision` / `recall` compare them with the held-out digits in the classifier's feature space (`ar-gen
fid --features classifier:OUT/classifier`); the grid of the first 10 per class is
`OUT/next_token/samples/grid.png`) and `next_scale` (VAR: a multi-scale tokenizer, entry `tokenizer_var` with
its PSNR from every prefix of scales, then a next-scale model on its tokens, sampled and scored the same way).
`make demo` runs all stages; `--stages` picks some. Trainings run side by side, one `ar-gen train` process each,
logging to `OUT/logs/` (one alone keeps about 1.4 of 2 cores busy): first the three tokenizers and the classifier,
then the two AR models; evaluations run in this process. Each stage trains from scratch in `OUT/<stage>`; the
headline numbers go to `OUT/summary.json`, one entry per stage with its `workdir`. `--quick` runs each config's
`:runlocal` variant.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from ar_gen import sample as sample_lib
from ar_gen.data import pipeline, tokens
from ar_gen.eval import fid, tokenizer_eval
from ar_gen.eval.classifier import Classifier

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# Trainings that depend on nothing else: run side by side, one process each (one alone keeps ~1.4 of 2 cores busy).
FIRST_TRAININGS = {"tokenizer_vq": "mnist_vq.py", "tokenizer_lfq": "mnist_lfq.py", "classifier": "mnist_classifier.py",
                   "tokenizer_var": "mnist_var_tok.py"}


def _write_summary(out: str, summary: dict) -> str:
  path = os.path.join(out, "summary.json")
  with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=2)
  os.replace(path + ".tmp", path)
  return path


def train_in_parallel(jobs: dict[str, tuple[str, str, list[str]]], logs: str, quick: bool) -> dict[str, float]:
  """Trains each job {name: (config file, workdir, overrides)} from scratch in its own `ar-gen train` process, all
  at once; output goes to LOGS/NAME.log. Returns each job's wall seconds; a failed job raises naming its log."""
  os.makedirs(logs, exist_ok=True)
  running, seconds, start = {}, {}, time.perf_counter()
  for name, (config_file, workdir, overrides) in jobs.items():
    shutil.rmtree(workdir, ignore_errors=True)
    config = os.path.join(CONFIG_DIR, config_file) + (":runlocal" if quick else "")
    log = open(os.path.join(logs, f"{name}.log"), "w")
    command = [sys.executable, "-m", "ar_gen.cli", "train", "--config", config, "--workdir", workdir]
    command += [f"--config.{o}" for o in overrides]
    running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
  print(f"== training {', '.join(jobs)} side by side (logs: {logs}/)", flush=True)
  while running:
    for name, (process, log) in list(running.items()):
      if process.poll() is None:
        continue
      log.close()
      del running[name]
      seconds[name] = time.perf_counter() - start
      if process.returncode:
        for other, _ in running.values():
          other.kill()
        with open(log.name) as f:
          tail = "".join(f.readlines()[-5:])
        raise RuntimeError(f"training {name} failed (exit {process.returncode}); see {log.name}:\n{tail}")
      print(f"== {name} trained in {seconds[name]:.0f} s", flush=True)
    time.sleep(0.5)
  return seconds


def evaluate_tokenizer(workdir: str, seconds: float) -> dict:
  """Evaluates the tokenizer trained in `workdir` on held-out data."""
  result = tokenizer_eval.evaluate(workdir)
  keep = ("psnr", "ssim", "codebook_usage", "perplexity", "psnr_by_scales")
  return {**{k: result[k] for k in keep if k in result}, "train_seconds": seconds, "workdir": workdir}


def evaluate_classifier(workdir: str, seconds: float) -> dict:
  classifier = Classifier(workdir)
  batches = list(pipeline.eval_batches(classifier.config.data, 500))
  accuracy = classifier.accuracy(np.concatenate([b["image"] for b in batches]),
                                 np.concatenate([b["label"] for b in batches]))
  return {"heldout_accuracy": accuracy, "train_seconds": seconds, "workdir": workdir}


def extract_tokens(tokenizer_dir: str, workdir: str) -> tuple[str, float]:
  """The tokenizer's tokens of the training split, in WORKDIR_tokens; returns (dataset spec, seconds)."""
  tokens_dir = os.path.abspath(workdir + "_tokens")
  shutil.rmtree(tokens_dir, ignore_errors=True)
  start = time.perf_counter()
  tokens.extract(tokenizer_dir, "bundled:mnist:train", tokens_dir)
  return f"tokens:{tokens_dir}", time.perf_counter() - start


def evaluate_generator(workdir: str, classifier_dir: str, quick: bool) -> dict:
  """Samples 1000 images (100 per class) from the AR model in `workdir` and scores them with the classifier."""
  num = 100 if quick else 1000
  samples = os.path.join(workdir, "samples")
  result = sample_lib.sample(workdir, samples, num, batch_size=250, classes="all")
  scores = fid.evaluate([os.path.join(samples, "samples.npz")], "bundled:mnist:test", f"classifier:{classifier_dir}",
                        cache_dir=os.path.join(workdir, "fid_cache"), out=os.path.join(workdir, "fid.json"))
  row = scores["results"][0]
  return {"sample_accuracy": row["accuracy"], "fid": row["fid"], "precision": row["precision"],
          "recall": row["recall"], "images_per_second": result["images_per_second"], "num_samples": num,
          "grid": os.path.join(samples, "grid.png"), "workdir": workdir}


def _report(out: str, summary: dict, stage: str) -> None:
  numbers = {k: v for k, v in summary[stage].items() if isinstance(v, float)}
  print(f"== {stage}: " + ", ".join(f"{k}={v:.4g}" for k, v in numbers.items()), flush=True)
  _write_summary(out, summary)


STAGES = ("tokenizers", "classifier", "next_token", "next_scale")
AR_STAGES = {"next_token": ("mnist_next_token.py", "tokenizer_vq"), "next_scale": ("mnist_var.py", "tokenizer_var")}


def parse_stages(text: str) -> tuple[str, ...]:
  stages = STAGES if text == "all" else tuple(s.strip() for s in text.split(",") if s.strip())
  unknown = [s for s in stages if s not in STAGES]
  if unknown or not stages:
    raise ValueError(f"unknown demo stages {unknown}; choose from {STAGES} or 'all'")
  if "next_token" in stages and not {"tokenizers", "classifier"} <= set(stages):
    raise ValueError("the next_token stage needs the tokenizers and classifier stages in the same run")
  if "next_scale" in stages and "classifier" not in stages:
    raise ValueError("the next_scale stage needs the classifier stage in the same run")
  return stages


def run(out: str = "runs/demo", quick: bool = False, stages: str = "all") -> dict:
  stages = parse_stages(stages)
  os.makedirs(out, exist_ok=True)
  logs = os.path.join(out, "logs")
  names = [n for n in FIRST_TRAININGS if (n == "classifier" and "classifier" in stages)
           or (n in ("tokenizer_vq", "tokenizer_lfq") and "tokenizers" in stages)
           or (n == "tokenizer_var" and "next_scale" in stages)]
  workdir = lambda name: os.path.abspath(os.path.join(out, name))
  seconds = train_in_parallel({n: (FIRST_TRAININGS[n], workdir(n), []) for n in names}, logs, quick) if names else {}
  summary = {}
  for name in names:
    if name == "classifier":
      summary[name] = evaluate_classifier(workdir(name), seconds[name])
    else:
      summary[name] = evaluate_tokenizer(workdir(name), seconds[name])
    _report(out, summary, name)
  ar_stages = {stage: AR_STAGES[stage] for stage in AR_STAGES if stage in stages}
  jobs, extract_seconds = {}, {}
  for stage, (config_file, tokenizer) in ar_stages.items():
    data, extract_seconds[stage] = extract_tokens(workdir(tokenizer), workdir(stage))
    jobs[stage] = (config_file, workdir(stage), [f"tokenizer_workdir={workdir(tokenizer)}", f"data.train={data}"])
  seconds = train_in_parallel(jobs, logs, quick) if jobs else {}
  for stage in ar_stages:
    summary[stage] = {**evaluate_generator(workdir(stage), workdir("classifier"), quick),
                      "train_seconds": seconds[stage], "extract_seconds": extract_seconds[stage]}
    _report(out, summary, stage)
  print(f"== summary: {os.path.join(out, 'summary.json')}")
  return summary
