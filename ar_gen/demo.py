"""`make demo` / `ar-gen demo`: the main job on the bundled MNIST, on CPU: train, sample, evaluate, summarise.

Stages: `tokenizers` (VQ and LFQ), `classifier` (the MNIST classifier, the judge of samples), `next_token`
(the VQ tokens of the training split are extracted once, a class-conditional next-token model trains on them and
samples 1000 images with guidance, 100 per class; the classifier's accuracy on them is `sample_accuracy`, and
`fid` / `precision` / `recall` compare them with the held-out digits in the classifier's feature space (`ar-gen
fid --features classifier:OUT/classifier`); the grid of the first 10 per class is
`OUT/next_token/samples/grid.png`) and `next_scale` (VAR: a multi-scale tokenizer, entry `tokenizer_var` with
its PSNR from every prefix of scales, then a next-scale model on its tokens, sampled and scored the same way).
`make demo` runs all stages; `--stages` picks some. Each stage trains from scratch in `OUT/<stage>`; the headline numbers go to `OUT/summary.json`, one
entry per stage with its `workdir`. `--quick` runs each config's `:runlocal` variant.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

from ar_gen import config as config_lib
from ar_gen import sample as sample_lib
from ar_gen.data import pipeline, tokens
from ar_gen.eval import fid, tokenizer_eval
from ar_gen.eval.classifier import Classifier
from ar_gen.train import trainer

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
TOKENIZER_STAGES = (("tokenizer_vq", "mnist_vq.py"), ("tokenizer_lfq", "mnist_lfq.py"))


def _write_summary(out: str, summary: dict) -> str:
  path = os.path.join(out, "summary.json")
  with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=2)
  os.replace(path + ".tmp", path)
  return path


def _train_fresh(config_file: str, workdir: str, quick: bool, overrides=()) -> float:
  """Trains a config from scratch in `workdir`; returns the seconds it took."""
  shutil.rmtree(workdir, ignore_errors=True)
  config = config_lib.load_config(os.path.join(CONFIG_DIR, config_file) + (":runlocal" if quick else ""), overrides)
  start = time.perf_counter()
  trainer.train(config, workdir)
  return time.perf_counter() - start


def train_tokenizer_stage(config_file: str, workdir: str, quick: bool) -> dict:
  """Trains a tokenizer config from scratch in `workdir` and evaluates it on held-out data."""
  seconds = _train_fresh(config_file, workdir, quick)
  result = tokenizer_eval.evaluate(workdir)
  keep = ("psnr", "ssim", "codebook_usage", "perplexity", "psnr_by_scales")
  return {**{k: result[k] for k in keep if k in result}, "train_seconds": seconds, "workdir": workdir}


def classifier_stage(workdir: str, quick: bool) -> dict:
  seconds = _train_fresh("mnist_classifier.py", workdir, quick)
  classifier = Classifier(workdir)
  batches = list(pipeline.eval_batches(classifier.config.data, 500))
  accuracy = classifier.accuracy(np.concatenate([b["image"] for b in batches]),
                                 np.concatenate([b["label"] for b in batches]))
  return {"heldout_accuracy": accuracy, "train_seconds": seconds, "workdir": workdir}


def ar_stage(config_file: str, workdir: str, tokenizer_dir: str, classifier_dir: str, quick: bool) -> dict:
  """Extracts the tokenizer's tokens of the training split, trains the AR model of `config_file` on them, samples
  1000 images (100 per class) and scores them with the classifier."""
  tokens_dir = workdir + "_tokens"
  shutil.rmtree(tokens_dir, ignore_errors=True)
  start = time.perf_counter()
  tokens.extract(tokenizer_dir, "bundled:mnist:train", tokens_dir)
  extract_seconds = time.perf_counter() - start
  seconds = _train_fresh(config_file, workdir, quick,
                         [f"tokenizer_workdir={tokenizer_dir}", f"data.train=tokens:{os.path.abspath(tokens_dir)}"])
  num = 100 if quick else 1000
  samples = os.path.join(workdir, "samples")
  result = sample_lib.sample(workdir, samples, num, batch_size=250, classes="all")
  scores = fid.evaluate([os.path.join(samples, "samples.npz")], "bundled:mnist:test", f"classifier:{classifier_dir}",
                        cache_dir=os.path.join(workdir, "fid_cache"), out=os.path.join(workdir, "fid.json"))
  row = scores["results"][0]
  return {"sample_accuracy": row["accuracy"], "fid": row["fid"], "precision": row["precision"],
          "recall": row["recall"], "train_seconds": seconds, "extract_seconds": extract_seconds,
          "images_per_second": result["images_per_second"], "num_samples": num,
          "grid": os.path.join(samples, "grid.png"), "workdir": workdir}


def _report(out: str, summary: dict, stage: str) -> None:
  numbers = {k: v for k, v in summary[stage].items() if isinstance(v, float)}
  print(f"== {stage}: " + ", ".join(f"{k}={v:.4g}" for k, v in numbers.items()), flush=True)
  _write_summary(out, summary)


STAGES = ("tokenizers", "classifier", "next_token", "next_scale")


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
  summary = {}
  for stage, config_file in TOKENIZER_STAGES if "tokenizers" in stages else ():
    print(f"== demo stage {stage}: {config_file}", flush=True)
    summary[stage] = train_tokenizer_stage(config_file, os.path.join(out, stage), quick)
    _report(out, summary, stage)
  if "classifier" in stages:
    print("== demo stage classifier: mnist_classifier.py", flush=True)
    summary["classifier"] = classifier_stage(os.path.join(out, "classifier"), quick)
    _report(out, summary, "classifier")
  if "next_token" in stages:
    print("== demo stage next_token: mnist_next_token.py", flush=True)
    summary["next_token"] = ar_stage("mnist_next_token.py", os.path.join(out, "next_token"),
                                     os.path.abspath(os.path.join(out, "tokenizer_vq")),
                                     os.path.join(out, "classifier"), quick)
    _report(out, summary, "next_token")
  if "next_scale" in stages:
    print("== demo stage next_scale: mnist_var_tok.py, then mnist_var.py", flush=True)
    tokenizer_dir = os.path.abspath(os.path.join(out, "tokenizer_var"))
    summary["tokenizer_var"] = train_tokenizer_stage("mnist_var_tok.py", tokenizer_dir, quick)
    _report(out, summary, "tokenizer_var")
    summary["next_scale"] = ar_stage("mnist_var.py", os.path.join(out, "next_scale"), tokenizer_dir,
                                     os.path.join(out, "classifier"), quick)
    _report(out, summary, "next_scale")
  print(f"== summary: {os.path.join(out, 'summary.json')}")
  return summary
