"""Training a next-token model on a tokenizer's tokens and `ar-gen sample` on it, including its refusals."""

import os

import jax
import numpy as np

from ar_gen import cli
from ar_gen.commands import sample
from ar_gen.train import metrics_log


def test_next_token_training_logs_and_draws(trained_next_token_workdir):
  records = metrics_log.read_metrics(trained_next_token_workdir)
  assert [r["step"] for r in records] == [1, 2, 3] and "token_accuracy" in records[0]
  assert os.path.exists(os.path.join(trained_next_token_workdir, "images", "samples_0000003.png"))


def test_sample_writes_npz_pngs_and_grid(trained_next_token_workdir, tmp_path, capsys):
  out = tmp_path / "s"
  code = cli.main(["sample", "--workdir", trained_next_token_workdir, "--num-images", "5", "--batch-size", "2",
                   "--classes", "3,7", "--cfg-scale", "2", "--top-k", "5", "--seed", "1", "--out", str(out)])
  assert code == 0, capsys.readouterr().err
  with np.load(out / "samples.npz") as f:
    images, labels = f["arr_0"], f["arr_1"]
  assert images.dtype == np.uint8 and images.shape == (5, 16, 16, 1)
  np.testing.assert_array_equal(np.sort(labels), [3, 3, 3, 7, 7])  # in a shuffled order (test_sampling_scale)
  assert len(os.listdir(out / "images")) == 5 and (out / "grid.png").exists()
  again = tmp_path / "again"
  cli.main(["sample", "--workdir", trained_next_token_workdir, "--num-images", "5", "--batch-size", "2",
            "--classes", "3,7", "--cfg-scale", "2", "--top-k", "5", "--seed", "1", "--out", str(again)])
  with np.load(again / "samples.npz") as f:
    np.testing.assert_array_equal(f["arr_0"], images)


def test_sample_refuses_bad_requests(trained_next_token_workdir, tmp_path, capsys):
  base = ["sample", "--out", str(tmp_path / "x")]
  assert cli.main(base + ["--workdir", str(tmp_path), "--num-images", "4"]) == 2
  assert "config.json" in capsys.readouterr().err
  assert cli.main(base + ["--workdir", trained_next_token_workdir, "--num-images", "4", "--classes", "12"]) == 2
  assert "[0, 9]" in capsys.readouterr().err
  assert cli.main(base + ["--workdir", trained_next_token_workdir, "--num-images", "0"]) == 2
  assert "at least 1" in capsys.readouterr().err


def test_labels_come_in_class_blocks():
  np.testing.assert_array_equal(sample.labels_for([1, 2], 6), [1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(sample.labels_for([0, 1, 2], 4), [0, 0, 1, 2])


def test_extracted_tokens_train_exactly_like_tokens_on_the_fly(trained_vq_workdir, tmp_path):
  import os as _os  # pylint: disable=g-import-not-at-top
  from ar_gen import config as config_lib  # pylint: disable=g-import-not-at-top
  from ar_gen.data import sources  # pylint: disable=g-import-not-at-top
  from ar_gen.train import trainer  # pylint: disable=g-import-not-at-top
  from tests.conftest import CONFIGS  # pylint: disable=g-import-not-at-top
  assert cli.main(["extract-tokens", "--workdir", trained_vq_workdir, "--data", "bundled:mnist:test",
                   "--out", str(tmp_path / "tok"), "--batch-size", "128"]) == 0
  src = sources.get_source(f"tokens:{tmp_path / 'tok'}")
  assert len(src) == 500 and src[0]["tokens"].shape == (64,) and src.num_classes == 10
  losses = []
  for train in ("bundled:mnist:test", f"tokens:{tmp_path / 'tok'}"):
    workdir = str(tmp_path / train.split(":")[0])
    config = config_lib.load_config(
        _os.path.join(CONFIGS, "mnist_next_token.py"),
        ("data.image_size=16", "batch_size=8", "total_steps=2", "log_every_steps=1", "vis_every_steps=0",
         "model.depth=1", "model.dim=32", "model.num_heads=2", f"frozen.tokenizer={trained_vq_workdir}",
         f"data.train={train}", "data.num_threads=1"))
    trainer.train(config, workdir)
    losses.append([r["loss"] for r in metrics_log.read_metrics(workdir)])
  np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_sampling_restores_only_the_model_weights(trained_vq_workdir, trained_next_token_workdir):
  from ar_gen.runs.run import restore_run  # pylint: disable=g-import-not-at-top
  _, state, _ = restore_run(trained_vq_workdir)  # a run with EMA: the EMA weights only
  assert sorted(state) == ["ema", "rest", "step"]
  _, full, _ = restore_run(trained_vq_workdir, full=True)
  assert "opt_state" in full and "params" in full
  for a, b in zip(jax.tree.leaves(state["ema"]), jax.tree.leaves(full["ema"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  _, state, _ = restore_run(trained_next_token_workdir)  # no EMA: the raw weights
  assert sorted(state) == ["params", "rest", "step"]
