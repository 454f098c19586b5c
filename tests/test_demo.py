"""`make demo`'s job: summary.json with one entry per stage; the full run meets the README's quality bar (slow)."""

import json
import os

import pytest

from ar_gen import demo

KEYS = {"psnr", "ssim", "codebook_usage", "train_seconds", "workdir"}


def test_quick_demo_writes_the_summary(tmp_path):
  demo.run(str(tmp_path), quick=True)
  summary = json.load(open(tmp_path / "summary.json"))
  assert set(summary) == {"tokenizer_vq", "tokenizer_lfq"}
  for stage in summary.values():
    assert KEYS <= set(stage)
    assert os.path.exists(os.path.join(stage["workdir"], "eval.json"))
    assert os.path.exists(os.path.join(stage["workdir"], "images", "eval_recon.png"))


@pytest.mark.slow
def test_full_demo_meets_the_quality_bar(tmp_path):
  summary = demo.run(str(tmp_path))
  assert summary["tokenizer_vq"]["psnr"] >= 24 and summary["tokenizer_vq"]["codebook_usage"] >= 0.9
  assert summary["tokenizer_lfq"]["psnr"] >= 22 and summary["tokenizer_lfq"]["codebook_usage"] >= 0.9
