"""A run whose work directory is a bucket URL (a local fake GCS server, same code path as `gs://`): training
interrupted and resumed there equals the local uninterrupted run; sampling writes there the images a local work
directory gives; the lock refuses a second trainer; TensorBoard and metrics land in the bucket."""

import json
import time

import numpy as np
import pytest

from ar_gen import cli, fileio
from ar_gen.errors import WorkdirLocked
from ar_gen.runs import lock as lock_lib
from ar_gen.train import metrics_log, trainer
from tests.conftest import tiny_ar_config
from tests.fake_bucket import fake_bucket

SAMPLE = ["--num-images", "4", "--batch-size", "2", "--classes", "1,2", "--seed", "3"]


@pytest.fixture(scope="module")
def bucket():
  with pytest.MonkeyPatch.context() as monkeypatch, fake_bucket(monkeypatch) as url:
    yield url


@pytest.fixture(scope="module")
def bucket_run(bucket, trained_vq_workdir):
  workdir = f"{bucket}/runs/next_token"
  config = tiny_ar_config("mnist_next_token.py", trained_vq_workdir)
  trainer.train(config, workdir, stop_after_steps=2)
  trainer.train(config, workdir)  # resumed from the bucket's checkpoint
  return workdir


def test_bucket_training_resumed_equals_local_run(bucket_run, trained_next_token_workdir):
  here = metrics_log.read_metrics(trained_next_token_workdir)
  there = metrics_log.read_metrics(bucket_run)
  assert [r["step"] for r in there] == [1, 2, 3]
  np.testing.assert_allclose([r["loss"] for r in there], [r["loss"] for r in here], rtol=1e-6)
  names = fileio.listdir(bucket_run)
  assert {"config.json", "checkpoints", "metrics.jsonl", "tb", "images", "train.lock"} <= set(names)
  events = fileio.listdir(fileio.join(bucket_run, "tb"))
  assert events and fileio.size(fileio.join(bucket_run, "tb", events[0])) > 0
  assert fileio.read_text(fileio.join(bucket_run, "train.lock")) == ""  # released


def test_bucket_sampling_equals_local_sampling(bucket, bucket_run, trained_next_token_workdir, tmp_path, capsys):
  assert cli.main(["sample", "--workdir", bucket_run, *SAMPLE, "--out", f"{bucket}/samples"]) == 0
  assert cli.main(["sample", "--workdir", trained_next_token_workdir, *SAMPLE, "--out", str(tmp_path)]) == 0
  there = fileio.load_npz(f"{bucket}/samples/samples.npz")
  here = fileio.load_npz(str(tmp_path / "samples.npz"))
  for key in ("arr_0", "arr_1"):
    np.testing.assert_array_equal(there[key], here[key])
  assert len(fileio.listdir(f"{bucket}/samples/images")) == 4
  assert cli.main(["sample", "--workdir", bucket_run, *SAMPLE, "--out", f"{bucket}/samples"]) == 2
  assert "--overwrite" in capsys.readouterr().err

  # FID of the bucket's samples against the same images on local disk, in the features of a classifier trained
  # in the bucket; reference cache and results in the bucket too
  from ar_gen import config as config_lib  # pylint: disable=g-import-not-at-top
  from tests.conftest import CONFIGS  # pylint: disable=g-import-not-at-top
  classifier = f"{bucket}/runs/classifier"
  trainer.train(config_lib.load_config(f"{CONFIGS}/mnist_classifier.py", ["total_steps=5", "data.image_size=16"]),
                classifier)
  assert cli.main(["fid", "--samples", f"{bucket}/samples/samples.npz", "--ref", str(tmp_path / "samples.npz"),
                   "--features", f"classifier:{classifier}", "--cache-dir", f"{bucket}/fid_cache",
                   "--out", f"{bucket}/fid.json"]) == 0, capsys.readouterr().err
  row = fileio.read_json(f"{bucket}/fid.json")["results"][0]
  assert row["count"] == 4 and abs(row["fid"]) < 1e-3 and row["precision"] == row["recall"] == 1.0
  assert len(fileio.listdir(f"{bucket}/fid_cache")) == 1


def test_bucket_lock_refuses_a_live_trainer_and_takes_over_a_dead_one(bucket, trained_vq_workdir):
  workdir = f"{bucket}/runs/locked"
  holder = {"host": "elsewhere", "pid": 1, "started": "then", "command": "ar-gen train ..."}
  fileio.write_json(fileio.join(workdir, lock_lib.LOCK_FILE), {**holder, "heartbeat": time.time()})
  config = tiny_ar_config("mnist_next_token.py", trained_vq_workdir, "total_steps=1")
  with pytest.raises(WorkdirLocked, match="elsewhere"):
    trainer.train(config, workdir)
  assert not fileio.exists(fileio.join(workdir, "config.json"))
  stale = time.time() - lock_lib.STALE_SECONDS - 1
  fileio.write_json(fileio.join(workdir, lock_lib.LOCK_FILE), {**holder, "heartbeat": stale})
  trainer.train(config, workdir)
  assert json.loads(fileio.read_text(fileio.join(workdir, "config.json")))["total_steps"] == 1


def test_bucket_token_set_reads_like_a_local_one(bucket, trained_vq_workdir, tmp_path, monkeypatch):
  from ar_gen.data import sources  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("HOME", str(tmp_path / "home"))  # fileio.local_copy's cache
  for out in (f"{bucket}/tokens", str(tmp_path / "tokens")):
    assert cli.main(["extract-tokens", "--workdir", trained_vq_workdir, "--data", "bundled:mnist:test",
                     "--out", out, "--batch-size", "250"]) == 0
  there, here = sources.get_source(f"tokens:{bucket}/tokens"), sources.get_source(f"tokens:{tmp_path / 'tokens'}")
  assert len(there) == len(here) == 500 and there.meta["tokenizer"] == here.meta["tokenizer"]
  for i in (0, 499):
    np.testing.assert_array_equal(there[i]["tokens"], here[i]["tokens"])
    assert there[i]["label"] == here[i]["label"]


@pytest.mark.slow
def test_bucket_tokenizer_run_evaluates_into_the_bucket(bucket, trained_vq_workdir):
  from ar_gen.eval import tokenizer_eval  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  workdir = f"{bucket}/runs/vq"
  trainer.train(tiny_config("mnist_vq.py", "total_steps=4", "ckpt_every_steps=2", "ema_decay=0.9"), workdir)
  there = tokenizer_eval.evaluate(workdir, max_examples=50, batch_size=50)
  here = tokenizer_eval.evaluate(trained_vq_workdir, max_examples=50, batch_size=50)
  assert there["psnr"] == pytest.approx(here["psnr"], rel=1e-6)
  assert fileio.read_json(fileio.join(workdir, "eval.json"))["psnr"] == there["psnr"]
  assert fileio.isfile(fileio.join(workdir, "images", "eval_recon.png"))


def test_bucket_local_copy_follows_a_rewritten_object_and_failed_uploads_leave_nothing(bucket, tmp_path):
  path = f"{bucket}/files/records.bin"
  fileio.write_bytes(path, b"A" * 64)
  first = fileio.local_copy(path, tmp_path)
  assert open(first, "rb").read() == b"A" * 64
  fileio.write_bytes(path, b"B" * 64)  # the same size, another generation
  assert open(fileio.local_copy(path, tmp_path), "rb").read() == b"B" * 64
  with pytest.raises(RuntimeError):
    with fileio._bucket_writer(f"{bucket}/files/half.bin") as f:  # pylint: disable=protected-access
      f.write(b"x" * 1000)
      raise RuntimeError("killed midway")
  assert not fileio.exists(f"{bucket}/files/half.bin")


def test_bucket_lock_taken_over_is_not_cleared_by_its_old_holder(bucket):
  workdir = f"{bucket}/runs/stalled"
  old = lock_lib.BucketLock(workdir).acquire()
  new_holder = {"host": "newhost", "pid": 2, "started": "now", "command": "ar-gen train", "token": "other",
                "heartbeat": time.time()}
  fileio.write_json(fileio.join(workdir, lock_lib.LOCK_FILE), new_holder)  # as a takeover after a long stall
  old.release()
  assert json.loads(fileio.read_text(fileio.join(workdir, lock_lib.LOCK_FILE)))["host"] == "newhost"


def test_bucket_converter_reads_torch_files_and_writes_weights_there(bucket, tmp_path):
  torch = pytest.importorskip("torch")
  from tests.test_lpips import _random_torch_state_dicts  # pylint: disable=g-import-not-at-top
  from tokenizers import lpips  # pylint: disable=g-import-not-at-top
  for name, sd in zip(("vgg.pth", "lin.pth"), _random_torch_state_dicts()):
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / name)
    fileio.copy_file(str(tmp_path / name), f"{bucket}/torch/{name}")
  assert cli.main(["convert-lpips", f"{bucket}/torch/vgg.pth", f"{bucket}/torch/lin.pth",
                   "--out", f"{bucket}/lpips.npz"]) == 0
  there = lpips.load_weights(f"{bucket}/lpips.npz")
  here = lpips.from_torch_state_dicts(*_random_torch_state_dicts())
  assert sorted(there) == sorted(here)
  for key, value in here.items():
    np.testing.assert_array_equal(np.asarray(there[key]), value)
