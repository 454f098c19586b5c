"""The ImageNet configs run one `:runlocal` step on TFDS mock data, as they would on accelerators."""

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
  assert metrics_log.read_metrics(str(tmp_path))[-1]["step"] == 1
  assert metrics["loss"] == metrics["loss"]  # finite, not NaN (the trainer refuses inf)
  assert "d_loss" in metrics and metrics["codebook_usage"] > 0


@pytest.mark.slow  # ~3.5 min on 2 cores; `make test-all`
def test_var_tokenizer_then_var_d16_runlocal_on_mock_imagenet(tmp_path):
  tok_dir, var_dir = str(tmp_path / "var_tok"), str(tmp_path / "var_d16")
  with tfds.testing.mock_data(num_examples=4):
    trainer.train(config_lib.load_config(os.path.join(CONFIGS, "imagenet256_var_tok.py:runlocal")), tok_dir)
    config = config_lib.load_config(os.path.join(CONFIGS, f"imagenet256_var_d16.py:runlocal,tokenizer={tok_dir}"))
    metrics = trainer.train(config, var_dir)
  assert metrics_log.read_metrics(var_dir)[-1]["step"] == 1 and metrics["loss"] == metrics["loss"]


@pytest.mark.parametrize("depth", [16, 20, 24, 30])
def test_var_configs_have_vars_sizes(depth):
  from ar_gen.models.next_scale import var_size  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(os.path.join(CONFIGS, f"imagenet256_var_d{depth}.py"))
  assert var_size(config.model) == (depth, 64 * depth, depth)
  assert config.batch_size == 768 and config.sample.cfg_schedule == "linear"
