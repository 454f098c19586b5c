"""Config files, `:args`, `--config.KEY=VALUE` overrides and their errors."""

import json
import os

import pytest

from ar_gen import config as config_lib
from ar_gen.train.task import TASKS
from tests.conftest import CONFIGS

ALL_CONFIGS = ("mnist_vq.py", "mnist_lfq.py", "imagenet256_vq16.py", "imagenet256_lfq.py", "mnist_classifier.py",
               "mnist_next_token.py")


@pytest.mark.parametrize("name", ALL_CONFIGS)
@pytest.mark.parametrize("arg", ["", ":runlocal"])
def test_every_config_loads_with_required_keys(name, arg):
  c = config_lib.load_config(os.path.join(CONFIGS, name) + arg)
  assert c.task in TASKS and c.total_steps >= 1
  if arg:
    assert c.total_steps <= 5


def test_overrides_keep_types():
  c = config_lib.load_config(os.path.join(CONFIGS, "mnist_vq.py"),
                             ["optimizer.lr=0.5", "total_steps=7", "model.channel_mult=(1,2)",
                              "data.random_flip=true", "data.train=bundled:mnist:test"])
  assert c.optimizer.lr == 0.5 and isinstance(c.optimizer.lr, float)
  assert c.total_steps == 7 and c.model.channel_mult == (1, 2)
  assert c.data.random_flip is True and c.data.train == "bundled:mnist:test"


def test_misspelled_override_names_the_key_and_the_nearest():
  with pytest.raises(config_lib.ConfigError, match=r"'optimizer.lrr'.*did you mean 'optimizer.lr'"):
    config_lib.load_config(os.path.join(CONFIGS, "mnist_vq.py"), ["optimizer.lrr=0.1"])


def test_misspelled_config_arg_names_the_nearest():
  with pytest.raises(config_lib.ConfigError, match=r"'runloca'.*did you mean 'runlocal'"):
    config_lib.load_config(os.path.join(CONFIGS, "mnist_vq.py") + ":runloca")


def test_wrongly_typed_override_is_refused():
  with pytest.raises(config_lib.ConfigError, match="total_steps"):
    config_lib.load_config(os.path.join(CONFIGS, "mnist_vq.py"), ["total_steps=abc"])


def test_missing_config_file_is_named(tmp_path):
  with pytest.raises(config_lib.ConfigError, match="nope.py"):
    config_lib.load_config(str(tmp_path / "nope.py"))


def test_resolved_config_round_trips_through_json(tmp_path):
  c = config_lib.load_config(os.path.join(CONFIGS, "mnist_vq.py"), ["optimizer.lr=0.25"])
  path = config_lib.save_config(c, str(tmp_path))
  assert json.load(open(path))["optimizer"]["lr"] == 0.25
  back = config_lib.load_workdir_config(str(tmp_path))
  assert back.model.channel_mult == tuple(c.model.channel_mult) and back.optimizer.lr == 0.25
