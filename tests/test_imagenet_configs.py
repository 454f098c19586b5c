"""The ImageNet configs run one `:runlocal` step on TFDS mock data, as they would on accelerators."""

import math
import os

import pytest
import tensorflow_datasets as tfds

from ar_gen import config as config_lib
from ar_gen.train import metrics_log, trainer
from tests.conftest import CONFIGS


@pytest.mark.slow  # 100-140 s each on 2 cores; `make test-all`
@pytest.mark.parametrize("name", ["imagenet256_vq16.py", "imagenet256_lfq.py"])
def test_runlocal_step_on_mock_imagenet(name, tmp_path):
  config = config_lib.load_config(os.path.join(CONFIGS, name) + ":runlocal")
  with tfds.testing.mock_data(num_examples=4):
    metrics = trainer.train(config, str(tmp_path))
  logged = metrics_log.read_metrics(str(tmp_path))[-1]
  assert logged["step"] == 1
  assert math.isfinite(metrics["loss"]) and logged["loss"] == metrics["loss"]  # returned = what metrics.jsonl logs
  assert "d_loss" in metrics and metrics["codebook_usage"] > 0


@pytest.mark.slow  # ~3.5 min on 2 cores; `make test-all`
def test_var_tokenizer_then_var_d16_runlocal_on_mock_imagenet(tmp_path):
  tok_dir, var_dir = str(tmp_path / "var_tok"), str(tmp_path / "var_d16")
  with tfds.testing.mock_data(num_examples=4):
    trainer.train(config_lib.load_config(os.path.join(CONFIGS, "imagenet256_var_tok.py:runlocal")), tok_dir)
    config = config_lib.load_config(
        os.path.join(CONFIGS, f"imagenet256_var.py:depth=16,runlocal,tokenizer={tok_dir}"))
    metrics = trainer.train(config, var_dir)
  logged = metrics_log.read_metrics(var_dir)[-1]
  assert logged["step"] == 1 and logged["loss"] == metrics["loss"]  # returned = what metrics.jsonl logs
  # the first step's cross-entropy over the tokenizer's codes is near log(V) of an untrained model, far below 2 log(V)
  codes = config_lib.load_workdir_config(tok_dir).model.multiscale.codebook_size
  assert 0 < metrics["loss"] < 2 * math.log(codes), (metrics["loss"], codes)


@pytest.mark.parametrize("depth, epochs", [(16, 200), (20, 250), (24, 350), (30, 350)])
def test_var_configs_have_vars_sizes(depth, epochs):
  from ar_gen.models.next_scale import var_size  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(os.path.join(CONFIGS, f"imagenet256_var.py:depth={depth}"))
  assert var_size(config.model) == (depth, 64 * depth, depth)
  assert config.batch_size == 768 and config.sample.cfg_schedule == "linear"
  assert config.total_steps == epochs * 1668 and config.optimizer.warmup_steps == epochs * 1668 // 50  # VAR's recipe
  assert (config.mesh.data, config.mesh.fsdp) == ((1, -1) if depth >= 24 else (-1, 1))


@pytest.mark.parametrize("arg", ["", ":depth=12", ":depth=16.0", ":runlocal"])
def test_var_config_without_one_of_vars_depths_names_them(arg):
  with pytest.raises(config_lib.ConfigError, match=r"depth=N .*\[16, 20, 24, 30\]"):
    config_lib.load_config(os.path.join(CONFIGS, "imagenet256_var.py") + arg)
