"""`make demo`'s job: summary.json with one entry per stage; the full run meets the README's quality bar (slow)."""

import json
import os

import pytest

from ar_gen import demo
from ar_gen.families import mar
from ar_gen.families._registry import registered
from ar_gen.layout import TokenLayout

KEYS = {"psnr", "ssim", "train_seconds", "workdir"}


def _check_ar_stage(stage: dict) -> None:
  assert 0 <= stage["sample_accuracy"] <= 1 and os.path.exists(stage["grid"])
  assert stage["num_samples"] == 100 and stage["images_per_second"] > 0
  bands = stage["spectrum"]
  assert bands["low"] > 0 and abs(bands["low"] + bands["mid"] + bands["high"] - 1) < 1e-9
  assert stage["fid"] > 0 and 0 <= stage["precision"] <= 1 and 0 <= stage["recall"] <= 1
  scores = json.load(open(stage["fid_json"]))  # the in-training sample-quality evaluator's `ar-gen fid` output
  assert scores["results"][0]["accuracy"] == stage["sample_accuracy"]
  trained_on = json.load(open(os.path.join(stage["workdir"], "config.json")))["data"]["train"]
  assert trained_on.startswith("tokens:") and os.path.exists(os.path.join(trained_on[7:], "meta.json"))


def _check_tokenizer(stage: dict) -> None:
  assert KEYS <= set(stage)
  assert os.path.exists(os.path.join(stage["workdir"], "eval.json"))
  assert os.path.exists(os.path.join(stage["workdir"], "images", "eval_recon.png"))


@pytest.mark.slow
def test_quick_demo_of_the_next_scale_stage_writes_the_summary(tmp_path):
  demo.run(str(tmp_path), quick=True, stages="classifier,next_scale")
  summary = json.load(open(tmp_path / "summary.json"))
  assert set(summary) == {"classifier", "tokenizer_var", "next_scale"}
  _check_tokenizer(summary["tokenizer_var"])
  assert len(summary["tokenizer_var"]["psnr_by_scales"]) == 6
  assert os.path.exists(os.path.join(summary["tokenizer_var"]["workdir"], "images", "eval_scales.png"))
  _check_ar_stage(summary["next_scale"])
  assert os.path.exists(tmp_path / "logs" / "next_scale.log")


@pytest.mark.slow  # ~3 min on 2 cores: the VQ, the clustered tokenizer, stage 1, stage 2 and next_token
def test_quick_demo_of_the_coarse_to_fine_stage_runs_its_prelude_first(tmp_path):
  demo.run(str(tmp_path), quick=True, stages="tokenizer_vq,classifier,coarse_to_fine")
  summary = json.load(open(tmp_path / "summary.json"))
  assert set(summary) == {"tokenizer_vq", "classifier", "coarse_to_fine"}
  _check_ar_stage(summary["coarse_to_fine"])
  stage2 = json.load(open(os.path.join(summary["coarse_to_fine"]["workdir"], "config.json")))
  assert stage2["frozen"] == {"tokenizer": str(tmp_path / "tokenizer_ctf"),
                              "stage1": str(tmp_path / "coarse_to_fine_stage1")}
  assert os.path.exists(tmp_path / "tokenizer_ctf" / "cluster.json")


def _check_discriminative(stage: dict) -> None:
  """Sample numbers as every family's, the pixel decoder's PSNR from true ids beside its VQ's, images in training."""
  for key in ("sample_accuracy", "fid", "recall", "images_per_second"):
    assert stage[key] >= 0
  assert 0 < stage["recon_psnr"] and 0 < stage["tokenizer_psnr"] and stage["steps_per_image"] == 128
  assert 0 <= stage["recon_accuracy"] <= 1  # the demo classifier on the pixel decoder's images from true ids
  config = json.load(open(os.path.join(stage["workdir"], "config.json")))
  assert config["data"]["train"] == "bundled:mnist:train" and set(config["frozen"]) == {"tokenizer", "ids", "stage1"}


@pytest.mark.slow  # ~4 min on 2 cores: the SSL encoder, fit-kmeans, stage 1, stage 2
def test_quick_demo_of_the_discriminative_stage_runs_its_prelude_first(tmp_path):
  demo.run(str(tmp_path), quick=True, stages="tokenizer_vq,classifier,discriminative")
  summary = json.load(open(tmp_path / "summary.json"))
  assert set(summary) == {"tokenizer_vq", "classifier", "discriminative"}
  _check_discriminative(summary["discriminative"])
  assert set(summary["discriminative"]["prelude_seconds"]) == {"digit_encoder", "tokenizer_digit",
                                                               "extract_discriminative_stage1",
                                                               "discriminative_stage1"}
  assert os.path.exists(tmp_path / "tokenizer_digit" / "kmeans.json")


@pytest.mark.slow  # ~5 min on 2 cores: six training processes; `make test-all`
def test_quick_demo_writes_the_summary(tmp_path):
  demo.run(str(tmp_path), quick=True, stages="all")
  summary = json.load(open(tmp_path / "summary.json"))
  assert set(summary) == {"tokenizer_vq", "tokenizer_lfq", "classifier", "next_token", "tokenizer_var", "next_scale",
                          "tokenizer_nfig", "next_frequency", "coarse_to_fine", "discriminative", "tokenizer_kl", "mar",
                          "mar_raster"}
  for name in ("tokenizer_vq", "tokenizer_lfq", "tokenizer_var", "tokenizer_nfig", "tokenizer_kl"):
    _check_tokenizer(summary[name])
    assert ("codebook_usage" in summary[name]) == (name != "tokenizer_kl")
  for name in ("next_token", "next_scale", "next_frequency", "coarse_to_fine", "mar", "mar_raster"):
    _check_ar_stage(summary[name])
  _check_discriminative(summary["discriminative"])
  assert set(summary["coarse_to_fine"]["prelude_seconds"]) == {"tokenizer_ctf", "extract_coarse_to_fine_stage1",
                                                              "coarse_to_fine_stage1"}
  assert summary["coarse_to_fine"]["steps_per_image"] == 65  # 64 coarse labels, then one stage-2 pass
  table = open(tmp_path / "families.md").read()
  assert "| data (held out)" in table and "| next_frequency" in table


def test_default_stages_are_every_family_without_the_lfq_tokenizer():
  assert demo.parse_stages("default") == ("tokenizer_vq", "classifier", "next_token", "next_scale")
  assert demo.parse_stages("all") == ("tokenizers", "classifier", "next_token", "next_scale", "next_frequency",
                                      "coarse_to_fine", "discriminative", "mar", "mar_raster")


def test_the_continuous_stage_is_the_classifier_and_both_continuous_families():
  assert demo.parse_stages("continuous") == ("classifier", "mar", "mar_raster")
  assert demo.parse_stages("classifier,continuous") == ("classifier", "mar", "mar_raster")


def test_ar_steps_per_image_are_the_samplers_steps_not_the_layouts_groups():
  layout = TokenLayout.raster((8, 8), kind="vectors", token_dim=4)
  masked = {"model": {"order": "masked"}, "sample": {"num_steps": 16}}
  assert mar.sampler_steps(masked, layout) == 16
  assert mar.sampler_steps({**masked, "model": {"order": "raster"}}, layout) == 64
  assert registered()["mar_raster"].sampler_steps is mar.sampler_steps


def test_the_families_table_has_a_row_per_family():
  row = dict(tokens_per_image=64, steps_per_image=64, sample_accuracy=0.9, fid=20.0, precision=0.8, recall=0.5,
             images_per_second=70.0, train_seconds=300.0)
  text = demo.families_table({"next_token": row, "next_scale": {**row, "steps_per_image": 6}, "classifier": {}})
  lines = text.splitlines()
  assert lines[0].startswith("| family") and len(lines) == 4  # header, rule, two families
  assert "| next_token" in lines[2] and "| next_scale" in lines[3] and "| 6 " in lines[3]


def test_the_spectrum_table_has_the_data_first_then_a_row_per_family():
  flat = {"low": 0.5, "mid": 0.3, "high": 0.2, "profile": [0.0, 1.0]}
  summary = {"classifier": {"spectrum": {**flat, "low": 0.7, "high": 0.0}}, "next_scale": {"spectrum": flat},
             "next_token": {"spectrum": {**flat, "low": 0.25}}}
  lines = demo.spectrum_table(summary).splitlines()
  assert len(lines) == 5 and "| data (held out)" in lines[2] and "| 0.7000" in lines[2]
  assert "| next_token" in lines[3] and "| 0.2500" in lines[3] and "| next_scale" in lines[4]


def test_unknown_or_incomplete_stages_are_refused():
  with pytest.raises(ValueError, match="tokenisers"):
    demo.parse_stages("tokenisers")
  with pytest.raises(ValueError, match="needs the tokenizers"):
    demo.parse_stages("next_token")
  with pytest.raises(ValueError, match="needs the classifier"):
    demo.parse_stages("tokenizers,next_scale")


@pytest.mark.slow
def test_full_demo_meets_the_quality_bar(tmp_path):
  summary = demo.run(str(tmp_path), stages="all")
  assert summary["tokenizer_vq"]["psnr"] >= 24 and summary["tokenizer_vq"]["codebook_usage"] >= 0.9
  assert summary["tokenizer_lfq"]["psnr"] >= 22 and summary["tokenizer_lfq"]["codebook_usage"] >= 0.9
  assert summary["next_token"]["sample_accuracy"] >= 0.9 and summary["next_token"]["fid"] > 0
  assert summary["next_scale"]["sample_accuracy"] >= 0.9 and summary["next_scale"]["fid"] > 0
  assert summary["tokenizer_kl"]["psnr"] >= 24
  for name in ("mar", "mar_raster"):
    assert summary[name]["sample_accuracy"] >= 0.9 and summary[name]["fid"] > 0, (name, summary[name])
  by_scale = summary["tokenizer_var"]["psnr_by_scales"]
  assert all(b > a for a, b in zip(by_scale, by_scale[1:])), by_scale
