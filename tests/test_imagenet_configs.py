"""The ImageNet tokenizer configs run one `:runlocal` step on TFDS mock data, as they would on accelerators."""

import os

import pytest
import tensorflow_datasets as tfds

from ar_gen import config as config_lib
from ar_gen.train import metrics_log, trainer
from tests.conftest import CONFIGS


@pytest.mark.parametrize("name", ["imagenet256_vq16.py", "imagenet256_lfq.py"])
def test_runlocal_step_on_mock_imagenet(name, tmp_path):
  config = config_lib.load_config(os.path.join(CONFIGS, name) + ":runlocal")
  with tfds.testing.mock_data(num_examples=4):
    metrics = trainer.train(config, str(tmp_path))
  assert metrics_log.read_metrics(str(tmp_path))[-1]["step"] == 1
  assert metrics["loss"] == metrics["loss"]  # finite, not NaN (the trainer refuses inf)
  assert "d_loss" in metrics and metrics["codebook_usage"] > 0
