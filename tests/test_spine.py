"""The spine's contracts: the token layout, compile from shapes with no tokenizer on disk, frozen components, the
in-training sample-quality evaluator, families found by convention."""

import json
import os

import numpy as np
import pytest

from ar_gen import cli, config as config_lib
from ar_gen.families._registry import registered
from ar_gen.layout import TokenLayout
from ar_gen.runs import frozen as frozen_lib
from ar_gen.runs.run import Run
from ar_gen.runs.task import family_names, task_class
from ar_gen.train import metrics_log, trainer
from tests.conftest import CONFIGS, tiny_ar_config


def test_raster_layout_is_one_group_per_token():
  layout = TokenLayout.raster((3, 4), 10)
  assert (layout.num_tokens, layout.num_groups, layout.equal_groups, layout.progressive) == (12, 12, True, False)
  np.testing.assert_array_equal(layout.group_ids(), np.arange(12))
  np.testing.assert_array_equal(layout.positions()[5], [1, 1])  # row 1, column 1 of the 3 x 4 map
  np.testing.assert_array_equal(layout.levels(), np.zeros(12))


def test_map_layout_is_one_group_per_map_and_splits_back():
  layout = TokenLayout.square_maps((1, 2, 3), 7)
  assert (layout.num_tokens, layout.num_groups, layout.equal_groups) == (14, 3, False)
  assert layout.group_sizes == (1, 4, 9) and layout.group_starts == (0, 1, 5) and layout.grid == (3, 3)
  np.testing.assert_array_equal(layout.group_ids(), [0] + [1] * 4 + [2] * 9)
  np.testing.assert_array_equal(layout.positions()[1:5], [[0, 0], [0, 1], [1, 0], [1, 1]])
  tokens = np.arange(2 * 14).reshape(2, 14)
  maps = layout.split(tokens)
  assert [m.shape for m in maps] == [(2, 1, 1), (2, 2, 2), (2, 3, 3)]
  np.testing.assert_array_equal(np.concatenate([m.reshape(2, -1) for m in maps], 1), tokens)
  assert TokenLayout.from_json(json.loads(json.dumps(layout.to_json()))) == layout


def test_bad_layouts_and_tokens_are_named():
  with pytest.raises(ValueError, match="vocab_size"):
    TokenLayout.raster((2, 2), 0)
  with pytest.raises(ValueError, match="token_dim"):
    TokenLayout.raster((2, 2), kind="vectors")
  with pytest.raises(ValueError, match=r"\(4,\)"):
    TokenLayout.raster((2, 2), 5).check(np.zeros((3, 5)))


def test_vector_layouts_have_a_token_dimension():
  layout = TokenLayout.raster((2, 2), kind="vectors", token_dim=16)
  assert layout.token_shape() == (4, 16)


def test_families_are_found_by_convention():
  assert family_names() == ("coarse_to_fine", "discriminative", "mar", "mar_raster", "next_frequency", "next_scale",
                            "next_token")
  assert list(registered()) == ["next_token", "next_scale", "next_frequency", "coarse_to_fine", "discriminative",
                                "mar", "mar_raster"]  # in the families' declared order
  for name in family_names():
    assert task_class(name).__module__ == f"ar_gen.families.{name}"
  with pytest.raises(ValueError, match="next_tokne.*known tasks"):
    task_class("next_tokne")


def test_compile_of_a_next_token_config_needs_no_tokenizer_on_disk(tmp_path, capsys):
  # frozen.tokenizer names a config file: shapes only, no work directory, no checkpoint
  out = tmp_path / "compile.json"
  code = cli.main(["compile", "--config", os.path.join(CONFIGS, "mnist_next_token.py"), "--topology", "local",
                   f"--config.frozen.tokenizer={os.path.join(CONFIGS, 'mnist_vq.py')}", "--out", str(out)])
  assert code == 0, capsys.readouterr().err
  result = json.load(open(out))
  assert result["params"] > 100_000 and result["bytes_per_device"]["total"] > 0


def test_a_config_file_has_no_weights_to_train_on():
  config = config_lib.load_config(os.path.join(CONFIGS, "mnist_next_token.py"),
                                  [f"frozen.tokenizer={os.path.join(CONFIGS, 'mnist_vq.py')}"])
  with pytest.raises(ValueError, match="frozen.tokenizer=.*config file: it has no weights"):
    frozen_lib.load_all(config)
  abstract = frozen_lib.load_all(config, abstract=True)["tokenizer"]
  assert abstract.layout == TokenLayout.raster((8, 8), 256) and abstract.step is None


def test_an_ar_run_given_as_the_tokenizer_is_refused_by_name(trained_next_token_workdir):
  config = config_lib.load_config(os.path.join(CONFIGS, "mnist_next_token.py"),
                                  ["data.image_size=16", f"frozen.tokenizer={trained_next_token_workdir}"])
  with pytest.raises(ValueError, match="holds a 'next_token' run, which gives a generator, not a tokenizer"):
    Run(config)


def test_a_missing_frozen_component_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="frozen.tokenizer=.*no config.json"):
    frozen_lib.load("tokenizer", str(tmp_path / "nowhere"))


def test_the_sample_quality_evaluator_writes_fid_into_metrics(trained_vq_workdir, tmp_path):
  classifier = str(tmp_path / "classifier")
  trainer.train(config_lib.load_config(os.path.join(CONFIGS, "mnist_classifier.py"),
                                       ["total_steps=20", "data.image_size=16", "log_every_steps=10"]), classifier)
  workdir = str(tmp_path / "next_token")
  config = tiny_ar_config("mnist_next_token.py", trained_vq_workdir, "total_steps=4", "ckpt_every_steps=4",
                          "evals.sample_quality.every_steps=2", "evals.sample_quality.num_images=20",
                          "evals.sample_quality.batch_size=10",
                          f"evals.sample_quality.features=classifier:{classifier}")
  last = trainer.train(config, workdir)
  rows = [r for r in metrics_log.read_metrics(workdir) if "sample_quality/fid" in r]
  assert [r["step"] for r in rows] == [2, 4]
  for r in rows:
    assert r["sample_quality/fid"] > 0 and 0 <= r["sample_quality/accuracy"] <= 1
    assert 0 <= r["sample_quality/precision"] <= 1 and r["sample_quality/images_per_second"] > 0
  assert last["sample_quality/fid"] == rows[-1]["sample_quality/fid"]
  scores = json.load(open(os.path.join(workdir, "evals", "sample_quality_0000004", "fid.json")))
  assert scores["results"][0]["fid"] == pytest.approx(rows[-1]["sample_quality/fid"])
  with np.load(os.path.join(workdir, "evals", "sample_quality_0000004", "samples.npz")) as f:
    assert f["arr_0"].shape == (20, 16, 16, 1) and sorted(set(f["arr_1"].tolist())) == list(range(10))
