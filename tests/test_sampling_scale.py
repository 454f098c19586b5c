"""Sampling at scale: samples.npz in a shuffled order whose labels still belong to their images, shards merged
into what one job writes, `--config.KEY=VALUE` overrides, and a restore that reads no optimizer state straight
into a copy per device."""

import os

import jax
import numpy as np
import pytest

from ar_gen import cli
from ar_gen.eval import generate as generate_lib
from ar_gen.runs.run import restore_run

FLAGS = ["--num-images", "5", "--batch-size", "2", "--classes", "3,7", "--seed", "4", "--top-k", "5"]


def _sample(workdir, out, *extra):
  return cli.main(["sample", "--workdir", workdir, *FLAGS, "--out", str(out), *extra])


def _npz(path):
  with np.load(path) as f:
    return f["arr_0"], f["arr_1"]


@pytest.fixture(scope="module")
def single(trained_next_token_workdir, tmp_path_factory):
  out = tmp_path_factory.mktemp("single")
  assert _sample(trained_next_token_workdir, out) == 0
  return out


def test_samples_are_shuffled_and_labels_stay_with_their_images(trained_next_token_workdir, single):
  images, labels = _npz(single / "samples.npz")
  run, state, _ = restore_run(trained_next_token_workdir)
  labels_N = generate_lib.labels_for([3, 7], 5)
  cfg = run.task.sampling_config(top_k=5)
  in_label_order = generate_lib.generate(run, state, labels_N, seed=4, batch_size=2, cfg=cfg, progress=False)
  order = generate_lib.file_order(5, 4)
  assert not np.array_equal(order, np.arange(5))  # the file is not in label order
  np.testing.assert_array_equal(images, in_label_order.images[order])  # image i is the one generated for labels[i]
  np.testing.assert_array_equal(labels, labels_N[order])
  names = sorted(os.listdir(single / "images"))
  assert names == [f"{i:06d}_class{labels[i]}.png" for i in range(5)]


def test_two_shards_merged_equal_one_job(trained_next_token_workdir, single, tmp_path, capsys):
  out = tmp_path / "sharded"
  for index in (1, 0):
    assert _sample(trained_next_token_workdir, out, "--num-shards", "2", "--shard-index", str(index)) == 0
  assert sorted(os.listdir(out / "shards")) == ["shard-00000-of-00002.npz", "shard-00001-of-00002.npz"]
  assert not (out / "samples.npz").exists()
  assert cli.main(["merge-samples", "--out", str(out)]) == 0, capsys.readouterr().err
  for a, b in zip(_npz(out / "samples.npz"), _npz(single / "samples.npz")):
    np.testing.assert_array_equal(a, b)
  assert sorted(os.listdir(out / "images")) == sorted(os.listdir(single / "images"))
  assert cli.main(["merge-samples", "--out", str(out)]) == 2  # refuses to replace without --overwrite
  assert "--overwrite" in capsys.readouterr().err


def test_merge_refuses_missing_or_mismatched_shards(trained_next_token_workdir, tmp_path, capsys):
  out = tmp_path / "partial"
  assert _sample(trained_next_token_workdir, out, "--num-shards", "3", "--shard-index", "0") == 0
  assert cli.main(["merge-samples", "--out", str(out)]) == 2
  assert "lacks 2 of 3 shards" in capsys.readouterr().err
  assert _sample(trained_next_token_workdir, out, "--num-shards", "3", "--shard-index", "1", "--temperature",
                 "0.5") == 0
  assert cli.main(["merge-samples", "--out", str(out)]) == 2
  assert "differ in ['sampling']" in capsys.readouterr().err
  assert _sample(trained_next_token_workdir, out, "--num-shards", "3", "--shard-index", "3") == 2
  assert "[0, 2]" in capsys.readouterr().err
  assert cli.main(["merge-samples", "--out", str(tmp_path / "none")]) == 2
  assert "no shards" in capsys.readouterr().err


def test_sample_takes_config_overrides(trained_next_token_workdir, single, tmp_path, capsys):
  out = tmp_path / "xla"
  assert _sample(trained_next_token_workdir, out, "--config.model.attn_impl=xla") == 0
  for a, b in zip(_npz(out / "samples.npz"), _npz(single / "samples.npz")):
    np.testing.assert_array_equal(a, b)
  assert _sample(trained_next_token_workdir, tmp_path / "typo", "--config.model.atn_impl=xla") == 2
  err = capsys.readouterr().err
  assert "model.atn_impl" in err and "model.attn_impl" in err
  assert _sample(trained_next_token_workdir, tmp_path / "shape", "--config.model.dim=48") == 2
  assert "does not match" in capsys.readouterr().err


def test_sampling_restore_reads_no_optimizer_state_into_every_device(trained_next_token_workdir):
  mesh = generate_lib.sampling_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  _, state, _ = restore_run(trained_next_token_workdir, sharding=replicated)
  assert sorted(state) == ["params", "rest", "step"]  # no opt_state, no second copy of the weights
  for leaf in jax.tree.leaves(state["params"]):
    assert leaf.sharding.is_equivalent_to(replicated, leaf.ndim) and len(leaf.addressable_shards) == mesh.size


def test_more_shards_than_batches_are_refused(trained_next_token_workdir, tmp_path, capsys):
  assert _sample(trained_next_token_workdir, tmp_path, "--num-shards", "4", "--shard-index", "0") == 2
  assert "more than the 3 batches" in capsys.readouterr().err
