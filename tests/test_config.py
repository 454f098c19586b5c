"""Config files, `:args`, `--config.KEY=VALUE` overrides and their errors."""

import json
import os

import pytest

from ar_gen import config as config_lib
from ar_gen.runs.task import task_names
from tests.conftest import CONFIGS

ALL_CONFIGS = ("mnist_vq.py", "mnist_lfq.py", "imagenet256_vq16.py", "imagenet256_lfq.py", "mnist_classifier.py",
               "mnist_next_token.py")


@pytest.mark.parametrize("name", ALL_CONFIGS)
@pytest.mark.parametrize("arg", ["", ":runlocal"])
def test_every_config_loads_with_required_keys(name, arg):
  c = config_lib.load_config(os.path.join(CONFIGS, name) + arg)
  assert c.task in task_names() and c.total_steps >= 1
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


def test_num_steps_from_steps_epochs_or_examples():
  assert config_lib.num_steps(steps=500) == 500
  assert config_lib.num_steps(epochs=200, batch_size=768, dataset_size=1_281_167) == 200 * 1668  # floor(N / B) per epoch
  assert config_lib.num_steps(epochs=0.5, batch_size=10, dataset_size=105) == 5  # whole batches per epoch
  assert config_lib.num_steps(examples=1001, batch_size=10) == 101  # rounded up to whole batches
  with pytest.raises(config_lib.ConfigError, match="exactly one of"):
    config_lib.num_steps(steps=1, epochs=1, batch_size=1, dataset_size=1)
  with pytest.raises(config_lib.ConfigError, match="dataset_size"):
    config_lib.num_steps(epochs=1, batch_size=768)


def test_fault_hooks_are_in_no_config_and_only_an_override_adds_them():
  plain = config_lib.load_config(os.path.join(CONFIGS, "mnist_vq.py"))
  assert dict(plain.fault) == {"preemption_check_steps": 10}
  c = config_lib.load_config(os.path.join(CONFIGS, "mnist_vq.py"),
                             ["fault.sigterm_after_step=3", "fault.inject_nan_at_step=5"])
  assert c.fault.sigterm_after_step == 3 and c.fault.inject_nan_at_step == 5 and c.fault.preemption_check_steps == 10
  with pytest.raises(config_lib.ConfigError, match="fault.sigterm_after_step"):
    config_lib.load_config(os.path.join(CONFIGS, "mnist_vq.py"), ["fault.sigterm_after_step=soon"])
  with pytest.raises(config_lib.ConfigError, match=r"'fault.inject_inf_at_step'.*did you mean 'fault.inject_nan"):
    config_lib.load_config(os.path.join(CONFIGS, "mnist_vq.py"), ["fault.inject_inf_at_step=3"])
