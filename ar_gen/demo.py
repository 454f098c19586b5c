"""`make demo` / `ar-gen demo`: the main job on the bundled MNIST, on CPU: train, evaluate, summarise.

Each stage trains one config from scratch in `OUT/<stage>` and evaluates it; the headline numbers go to
`OUT/summary.json`, one entry per stage with its `workdir`. `--quick` runs each config's `:runlocal` variant.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from ar_gen import config as config_lib
from ar_gen.eval import tokenizer_eval
from ar_gen.train import trainer

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
TOKENIZER_STAGES = (("tokenizer_vq", "mnist_vq.py"), ("tokenizer_lfq", "mnist_lfq.py"))


def _write_summary(out: str, summary: dict) -> str:
  path = os.path.join(out, "summary.json")
  with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=2)
  os.replace(path + ".tmp", path)
  return path


def train_tokenizer_stage(config_file: str, workdir: str, quick: bool) -> dict:
  """Trains a tokenizer config from scratch in `workdir` and evaluates it on held-out data."""
  shutil.rmtree(workdir, ignore_errors=True)
  config = config_lib.load_config(os.path.join(CONFIG_DIR, config_file) + (":runlocal" if quick else ""))
  start = time.perf_counter()
  trainer.train(config, workdir)
  seconds = time.perf_counter() - start
  result = tokenizer_eval.evaluate(workdir)
  return {"psnr": result["psnr"], "ssim": result["ssim"], "codebook_usage": result["codebook_usage"],
          "perplexity": result["perplexity"], "train_seconds": seconds, "workdir": workdir}


def run(out: str = "runs/demo", quick: bool = False) -> dict:
  os.makedirs(out, exist_ok=True)
  summary = {}
  for stage, config_file in TOKENIZER_STAGES:
    print(f"== demo stage {stage}: {config_file}", flush=True)
    summary[stage] = train_tokenizer_stage(config_file, os.path.join(out, stage), quick)
    print(f"== {stage}: " + ", ".join(f"{k}={v:.4g}" for k, v in summary[stage].items() if k != "workdir"),
          flush=True)
    _write_summary(out, summary)
  print(f"== summary: {os.path.join(out, 'summary.json')}")
  return summary
