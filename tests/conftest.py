"""Shared test fixtures: tiny configs and a trained tiny tokenizer work directory."""

import os

import pytest

from ar_gen import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")

TINY = ("model.channels=8", "model.channel_mult=(1,2)", "model.z_channels=16", "batch_size=8",
        "data.image_size=16", "log_every_steps=1", "vis_every_steps=3", "data.num_threads=1")


def tiny_config(name: str = "mnist_vq.py", *overrides: str):
  """A config from configs/ shrunk to run a step in well under a second on CPU."""
  return config_lib.load_config(os.path.join(CONFIGS, name), TINY + overrides)


def tiny_ar_config(name: str, tokenizer_workdir: str, *overrides: str):
  """An AR config from configs/ shrunk to 3 steps of a one-block model over a tiny tokenizer's 16x16 images."""
  return config_lib.load_config(
      os.path.join(CONFIGS, name),
      ("data.image_size=16", "batch_size=8", "total_steps=3", "ckpt_every_steps=3", "log_every_steps=1",
       "vis_every_steps=3", "vis_examples=4", "model.depth=1", "model.dim=32", "model.num_heads=2",
       f"frozen.tokenizer={tokenizer_workdir}", "data.num_threads=1") + overrides)


@pytest.fixture(scope="session")
def trained_vq_workdir(tmp_path_factory):
  from ar_gen.train import trainer
  workdir = str(tmp_path_factory.mktemp("vq"))
  trainer.train(tiny_config("mnist_vq.py", "total_steps=4", "ckpt_every_steps=2", "ema_decay=0.9"), workdir)
  return workdir


@pytest.fixture(scope="session")
def trained_next_token_workdir(trained_vq_workdir, tmp_path_factory):
  from ar_gen.train import trainer
  workdir = str(tmp_path_factory.mktemp("next_token"))
  config = tiny_ar_config("mnist_next_token.py", trained_vq_workdir)
  trainer.train(config, workdir)
  return workdir
