"""Nothing lost, nothing silent: every refused command leaves the work directory byte-identical and says why in
one line; locks keep side-by-side jobs apart; readers never move a checkpoint (docs/reliability.md)."""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from ar_gen import cli
from ar_gen.train import metrics_log
from tests.conftest import CONFIGS, REPO, TINY

VQ = os.path.join(CONFIGS, "mnist_vq.py")
NEXT_TOKEN = os.path.join(CONFIGS, "mnist_next_token.py")
VQ_ARGS = ["--config", VQ] + [f"--config.{o}" for o in TINY + ("total_steps=4", "ckpt_every_steps=2",
                                                                  "ema_decay=0.9")]
AR_TINY = ("data.image_size=16", "batch_size=8", "log_every_steps=1", "vis_every_steps=0", "model.depth=1",
           "model.dim=32", "model.num_heads=2", "data.num_threads=1")


def snapshot(workdir) -> dict[str, str]:
  """{path: sha256} of every file of a work directory (the lock file aside)."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      if name != "train.lock":
        with open(path, "rb") as f:
          out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return out


def assert_kept(before: dict[str, str], workdir) -> None:
  """Every file of `before` is still there, byte-identical (new files, e.g. a TensorBoard event file, may add)."""
  now = snapshot(workdir)
  assert {k: now.get(k) for k in before} == before


def copy_run(src, tmp_path, name="run") -> str:
  dst = str(tmp_path / name)
  shutil.copytree(src, dst)
  return dst


def refused(capsys, argv, *needles) -> str:
  """Runs `ar-gen ARGV`; asserts exit 2 and a one-line error that contains every needle."""
  code = cli.main(argv)
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.startswith("ar-gen ")]
  assert code == 2, err[-2000:]
  assert lines and "error:" in lines[-1] and "Traceback" not in err, err[-2000:]
  for needle in needles:
    assert needle in err, (needle, err[-2000:])
  return err


# ------------------------------------------------------------------------------------------------- data lost
@pytest.mark.parametrize("override, needle", [("keep_ckpts=0", "keep_ckpts=0"), ("total_steps=-5", "total_steps"),
                                              ("log_every_steps=0", "log_every_steps"),
                                              ("ckpt_every_steps=0", "ckpt_every_steps")])
def test_bad_run_settings_are_refused_before_the_work_dir_is_touched(trained_vq_workdir, tmp_path, capsys, override,
                                                                     needle):
  workdir = copy_run(trained_vq_workdir, tmp_path)
  before = snapshot(workdir)
  refused(capsys, ["train", *VQ_ARGS, "--workdir", workdir, f"--config.{override}"], needle)
  assert snapshot(workdir) == before


def test_sample_with_an_edited_config_refuses_and_moves_nothing(trained_next_token_workdir, tmp_path, capsys):
  workdir = copy_run(trained_next_token_workdir, tmp_path)
  path = os.path.join(workdir, "config.json")
  good = open(path).read()
  config = json.loads(good)
  config["model"]["dim"] = 48
  with open(path, "w") as f:
    json.dump(config, f)
  before = snapshot(workdir)
  refused(capsys, ["sample", "--workdir", workdir, "--num-images", "2", "--out", str(tmp_path / "s")],
          "does not match this config")
  assert snapshot(workdir) == before and not os.path.exists(os.path.join(workdir, "checkpoints_unreadable"))
  with open(path, "w") as f:
    f.write(good)
  assert cli.main(["sample", "--workdir", workdir, "--num-images", "2", "--batch-size", "2",
                   "--out", str(tmp_path / "s")]) == 0


def test_train_with_another_model_config_refuses_naming_the_keys(trained_vq_workdir, tmp_path, capsys):
  workdir = copy_run(trained_vq_workdir, tmp_path)
  before = snapshot(workdir)
  refused(capsys, ["train", *VQ_ARGS, "--workdir", workdir, "--config.model.z_channels=24"],
          "model.z_channels: 16 there, 24 now", "--allow-config-change")
  assert snapshot(workdir) == before
  # with the flag, a change of shapes is still refused by the checkpoint, before anything is written
  refused(capsys, ["train", *VQ_ARGS, "--workdir", workdir, "--config.model.z_channels=24", "--allow-config-change"],
          "does not match this config")
  assert snapshot(workdir) == before
  # the right command resumes (nothing to do: the run is finished) and keeps every line of metrics.jsonl
  assert cli.main(["train", *VQ_ARGS, "--workdir", workdir]) == 0
  assert_kept(before, workdir)


def test_allowed_config_change_keeps_the_old_config(trained_vq_workdir, tmp_path):
  workdir = copy_run(trained_vq_workdir, tmp_path)
  old = open(os.path.join(workdir, "config.json")).read()
  assert cli.main(["train", *VQ_ARGS, "--workdir", workdir, "--config.total_steps=5", "--allow-config-change"]) == 0
  assert open(os.path.join(workdir, "config.before_step_4.json")).read() == old
  assert [r["step"] for r in metrics_log.read_metrics(workdir)] == [1, 2, 3, 4, 5]


def test_runtime_keys_may_change_on_resume(trained_vq_workdir, tmp_path):
  workdir = copy_run(trained_vq_workdir, tmp_path)
  assert cli.main(["train", *VQ_ARGS, "--workdir", workdir, "--config.keep_ckpts=5",
                   "--config.log_every_steps=2"]) == 0


def test_reader_falls_back_from_a_truncated_checkpoint_and_moves_nothing(trained_vq_workdir, tmp_path):
  workdir = copy_run(trained_vq_workdir, tmp_path)  # steps 2 and 4
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "4", "state")):
    for name in files:
      if os.path.getsize(os.path.join(root, name)) > 100:
        os.truncate(os.path.join(root, name), 50)
  checkpoints = os.path.join(workdir, "checkpoints")
  before = snapshot(checkpoints)
  result = subprocess.run([sys.executable, "-m", "ar_gen.cli", "eval-tokenizer", "--workdir", workdir,
                           "--max-examples", "8", "--batch-size", "8"], capture_output=True, text=True, cwd=REPO,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 4" in result.stderr and "unreadable" in result.stderr, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and "Event loop" not in result.stderr, result.stderr[-3000:]
  assert "'step': 2" in result.stdout, result.stdout
  assert snapshot(checkpoints) == before and not os.path.exists(checkpoints + "_unreadable")


def test_extract_tokens_refuses_an_existing_token_set(trained_vq_workdir, tmp_path, capsys):
  out = str(tmp_path / "tok")
  args = ["extract-tokens", "--workdir", trained_vq_workdir, "--data", "bundled:mnist:test", "--out", out]
  assert cli.main(args) == 0
  before = snapshot(out)
  refused(capsys, args, "already holds results", "--overwrite")
  assert snapshot(out) == before
  assert cli.main(args + ["--overwrite"]) == 0


# ------------------------------------------------------------------------------------------------- silent
def test_tokens_of_another_tokenizer_are_refused(trained_vq_workdir, tmp_path, capsys):
  other = copy_run(trained_vq_workdir, tmp_path, "other_vq")  # same grid and codebook, other weights
  config = json.load(open(os.path.join(other, "config.json")))
  config["seed"] = 7
  json.dump(config, open(os.path.join(other, "config.json"), "w"))
  tokens = str(tmp_path / "tok")
  assert cli.main(["extract-tokens", "--workdir", other, "--data", "bundled:mnist:test", "--out", tokens]) == 0
  refused(capsys, ["train", "--config", NEXT_TOKEN, "--workdir", str(tmp_path / "ar"),
                   *[f"--config.{o}" for o in AR_TINY], "--config.total_steps=1",
                   f"--config.frozen.tokenizer={trained_vq_workdir}", f"--config.data.train=tokens:{tokens}"],
          "was made by the tokenizer", other)
  assert not os.path.exists(tmp_path / "ar" / "checkpoints" / "1")


def _image_folder(root, num_classes, per_class, size=8):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for c in range(num_classes):
    os.makedirs(root / f"class{c:02d}", exist_ok=True)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 255, (size, size), np.uint8)).save(root / f"class{c:02d}" / f"{i}.png")


def test_more_classes_than_the_model_has_are_refused(tmp_path, capsys):
  _image_folder(tmp_path / "imgs", 12, 2)
  refused(capsys, ["train", "--config", os.path.join(CONFIGS, "mnist_classifier.py"), "--workdir",
                   str(tmp_path / "w"), f"--config.data.train=folder:{tmp_path / 'imgs'}",
                   f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.total_steps=1"],
          "12 classes", "model.num_classes=10")


def test_sample_out_is_refused_or_cleared_but_never_mixed(trained_next_token_workdir, tmp_path, capsys):
  out = tmp_path / "s"
  base = ["sample", "--workdir", trained_next_token_workdir, "--batch-size", "4", "--out", str(out)]
  assert cli.main(base + ["--num-images", "4"]) == 0
  before = snapshot(out)
  refused(capsys, base + ["--num-images", "2"], "already holds results")
  assert snapshot(out) == before
  (out / "notes.txt").write_text("mine")
  assert cli.main(base + ["--num-images", "2", "--overwrite"]) == 0
  assert sorted(n.split("_")[1] for n in os.listdir(out / "images")) == ["class0.png", "class5.png"]  # 2 new only
  assert (out / "notes.txt").read_text() == "mine"  # only the command's own results are cleared


@pytest.mark.parametrize("flags, needle", [
    (["--cfg-interval", "0.9,0.1"], "0 <= LO <= HI <= 1"), (["--cfg-interval", "0.2"], "LO,HI"),
    (["--cfg-scale", "-1"], "cfg_scale"), (["--top-p", "0"], "top_p"), (["--classes", "3,99"], "[0, 9]"),
    (["--num-images", "0"], "--num-images")])
def test_bad_sampling_flags_fail_before_the_model_loads(trained_next_token_workdir, tmp_path, capsys, flags, needle):
  argv = ["sample", "--workdir", trained_next_token_workdir, "--num-images", "2", "--out", str(tmp_path / "s")]
  refused(capsys, argv + flags, needle)
  assert not os.path.exists(tmp_path / "s")


def test_sample_into_an_existing_file_fails_before_sampling(trained_next_token_workdir, tmp_path, capsys):
  (tmp_path / "f").write_text("x")
  refused(capsys, ["sample", "--workdir", trained_next_token_workdir, "--num-images", "2", "--out",
                   str(tmp_path / "f")], "is an existing file")


# ------------------------------------------------------------------------------------------------- jobs side by side
def _train_process(workdir, *extra):
  return subprocess.Popen([sys.executable, "-m", "ar_gen.cli", "train", *VQ_ARGS, "--workdir", workdir, *extra],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_lock(workdir, proc, timeout=120):
  path = os.path.join(workdir, "train.lock")
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.exists(path) and os.path.getsize(path):
      return json.load(open(path))
    time.sleep(0.1)
  raise AssertionError(f"no lock taken: {proc.communicate()}")


def test_second_trainer_on_a_locked_work_dir_exits_naming_the_holder(tmp_path, capsys):
  workdir = str(tmp_path / "w")
  first = _train_process(workdir, "--config.total_steps=12", "--config.ckpt_every_steps=4")
  holder = _wait_for_lock(workdir, first)
  assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
  refused(capsys, ["train", *VQ_ARGS, "--workdir", workdir, "--config.total_steps=12",
                   "--config.ckpt_every_steps=4"], f"pid {first.pid}", "is being trained by")
  out, err = first.communicate(timeout=300)
  assert first.returncode == 0, err[-3000:]
  from ar_gen.runs.run import restore_run  # pylint: disable=g-import-not-at-top
  assert restore_run(workdir)[2] == 12
  steps = [r["step"] for r in metrics_log.read_metrics(workdir)]
  assert steps == sorted(set(steps)) and steps[-1] == 12


@pytest.mark.slow  # a full training; the default run keeps the live-holder lock test
def test_stale_lock_of_a_dead_trainer_is_taken_over(tmp_path, caplog):
  workdir = tmp_path / "w"
  workdir.mkdir()
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                        check=True)
  (workdir / "train.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                                  "started": "earlier", "command": "ar-gen train (killed)"}))
  with caplog.at_level("WARNING", logger="ar_gen.train"):
    assert cli.main(["train", *VQ_ARGS, "--workdir", str(workdir), "--config.total_steps=1"]) == 0
  assert "taking over the lock" in caplog.text and "(killed)" in caplog.text
  assert (workdir / "train.lock").read_text() == ""  # released


def test_sampling_beside_a_training_reads_committed_checkpoints(trained_vq_workdir, tmp_path):
  from ar_gen.runs.run import restore_run  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "ar")
  trainer = subprocess.Popen(
      [sys.executable, "-m", "ar_gen.cli", "train", "--config", NEXT_TOKEN, "--workdir", workdir,
       *[f"--config.{o}" for o in AR_TINY], "--config.total_steps=60", "--config.ckpt_every_steps=1",
       "--config.keep_ckpts=1", f"--config.frozen.tokenizer={trained_vq_workdir}"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  steps = []
  while trainer.poll() is None:
    if os.path.isdir(os.path.join(workdir, "checkpoints")) and any(
        s.isdigit() for s in os.listdir(os.path.join(workdir, "checkpoints"))):
      steps.append(restore_run(workdir)[2])
    else:
      time.sleep(0.2)
  _, err = trainer.communicate()
  assert trainer.returncode == 0, err[-3000:]
  assert len(steps) >= 2 and steps == sorted(steps), steps
  assert restore_run(workdir)[2] == 60


def test_two_trainings_on_one_new_folder_dataset_both_train(tmp_path):
  _image_folder(tmp_path / "imgs", 10, 100)  # 1000 images, prepared by neither yet
  data = [f"--config.data.train=folder:{tmp_path / 'imgs'}", f"--config.data.eval=folder:{tmp_path / 'imgs'}",
          f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.total_steps=2"]
  procs = [_train_process(str(tmp_path / f"w{i}"), *data) for i in range(2)]
  for proc in procs:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
  for i in range(2):
    assert [r["step"] for r in metrics_log.read_metrics(str(tmp_path / f"w{i}"))] == [1, 2]


# ------------------------------------------------------------------------------------------------- one error path
@pytest.mark.parametrize("text, needle", [
    ("def get_config(arg):\n  return 3 +\n", "syntax error at line 2"),
    ("def get_config(arg):\n  return {'task': 'x'}\n", "must return an ml_collections.ConfigDict"),
    ("import no_such_module_xyz\n", "failed to load: ModuleNotFoundError"),
    ("X = 1\n", "defines no get_config"),
])
def test_broken_config_files_are_named(tmp_path, capsys, text, needle):
  path = tmp_path / "bad_config.py"
  path.write_text(text)
  refused(capsys, ["train", "--config", str(path), "--workdir", str(tmp_path / "w")], "bad_config.py", needle)
  assert not os.path.exists(tmp_path / "w")


def test_config_path_that_is_a_directory(tmp_path, capsys):
  refused(capsys, ["train", "--config", str(tmp_path), "--workdir", str(tmp_path / "w")], "is a directory")


def test_invalid_config_json_is_named(trained_next_token_workdir, tmp_path, capsys):
  workdir = copy_run(trained_next_token_workdir, tmp_path)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write("{not json")
  refused(capsys, ["sample", "--workdir", workdir, "--num-images", "1", "--out", str(tmp_path / "s")],
          os.path.join(workdir, "config.json"), "not a readable config")


def test_workdir_that_is_a_file(tmp_path, capsys):
  (tmp_path / "f").write_text("x")
  refused(capsys, ["train", *VQ_ARGS, "--workdir", str(tmp_path / "f")], "is a file")
  refused(capsys, ["sample", "--workdir", str(tmp_path / "f"), "--num-images", "1", "--out", str(tmp_path / "s")],
          "is a file")


def test_eval_tokenizer_on_an_ar_run_is_refused(trained_next_token_workdir, capsys):
  refused(capsys, ["eval-tokenizer", "--workdir", trained_next_token_workdir], "'next_token' run",
          "ar-gen sample")


def test_batch_that_does_not_split_over_the_devices_says_so():
  from ar_gen.runs import mesh as mesh_lib  # pylint: disable=g-import-not-at-top

  class FakeMesh:
    shape, size = {"data": 4, "fsdp": 2, "tensor": 1}, 8

  with pytest.raises(ValueError, match=r"batch_size=12 does not split over the 8 data-parallel devices"):
    mesh_lib.check_batch_size(FakeMesh(), 12)
  mesh_lib.check_batch_size(FakeMesh(), 16)


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys):
  def interrupted(args, overrides):
    raise KeyboardInterrupt
  spec = next(c for c in cli.COMMANDS if c.name == "demo")
  monkeypatch.setattr(cli, "COMMANDS", tuple(c if c.name != "demo" else
                                              cli.Command("demo", spec.help, spec.arguments, interrupted)
                                              for c in cli.COMMANDS))
  assert cli.main(["demo"]) == 130
  err = capsys.readouterr().err
  assert err.strip() == "ar-gen demo: interrupted"


def test_debug_shows_the_traceback(tmp_path):
  with pytest.raises(Exception, match="does not exist"):
    cli.main(["train", "--config", str(tmp_path / "none.py"), "--workdir", str(tmp_path / "w"), "--debug"])


# ------------------------------------------------------------------------------------------------- review cases
def test_all_checkpoints_unreadable_moves_nothing(trained_vq_workdir, tmp_path, capsys):
  workdir = copy_run(trained_vq_workdir, tmp_path)
  for step in ("2", "4"):
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", step, "state")):
      for name in files:
        if os.path.getsize(os.path.join(root, name)) > 100:
          os.truncate(os.path.join(root, name), 50)
  before = snapshot(workdir)
  refused(capsys, ["train", *VQ_ARGS, "--workdir", workdir], "no readable checkpoint", "nothing was moved")
  assert snapshot(workdir) == before and not os.path.exists(os.path.join(workdir, "checkpoints_unreadable"))


def test_a_step_deleted_while_read_is_read_again_from_the_newest(trained_vq_workdir, tmp_path, monkeypatch):
  from ar_gen.runs import checkpoint  # pylint: disable=g-import-not-at-top
  from ar_gen.runs.run import Run  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  workdir = copy_run(trained_vq_workdir, tmp_path)
  original, calls = checkpoint.Checkpointer._restore, []

  def deleted_under_the_reader(self, abstract_state, step, with_data, partial=False):
    calls.append(step)
    if len(calls) == 1:  # what a trainer keeping the last K does between our listing and our read
      shutil.rmtree(self.step_directory(step))
      raise FileNotFoundError(f"step {step} vanished")
    return original(self, abstract_state, step, with_data, partial)

  monkeypatch.setattr(checkpoint.Checkpointer, "_restore", deleted_under_the_reader)
  monkeypatch.setattr(checkpoint, "VANISH_WAIT_SECONDS", 0.0)
  ckpt = checkpoint.Checkpointer(workdir, async_save=False, read_only=True)
  target = checkpoint.restore_target(Run(json_config(workdir)).abstract_state(),
                                     jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
  try:
    _, _, step = ckpt.restore(target, with_data=False)
  finally:
    ckpt.close()
  assert calls == [4, 2] and step == 2


def json_config(workdir):
  from ar_gen import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_workdir_config(workdir)


def test_keeping_fewer_checkpoints_on_resume_needs_the_flag(trained_vq_workdir, tmp_path, capsys):
  workdir = copy_run(trained_vq_workdir, tmp_path)
  before = snapshot(workdir)
  refused(capsys, ["train", *VQ_ARGS, "--workdir", workdir, "--config.keep_ckpts=1"], "keep_ckpts: 2 there, 1 now")
  assert snapshot(workdir) == before


@pytest.mark.slow
def test_a_run_that_never_saved_may_restart_with_another_config(tmp_path):
  workdir = str(tmp_path / "w")
  with pytest.raises(FloatingPointError):  # dies at step 1, before its first checkpoint
    from ar_gen.train import trainer  # pylint: disable=g-import-not-at-top
    from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
    trainer.train(tiny_config("mnist_vq.py", "total_steps=2", "fault.inject_nan_at_step=1"), workdir)
  assert cli.main(["train", *VQ_ARGS, "--workdir", workdir, "--config.total_steps=2",
                   "--config.optimizer.lr=0.0005"]) == 0


def test_overwrite_keeps_the_old_samples_when_the_command_fails_before_writing(trained_next_token_workdir, tmp_path,
                                                                               capsys):
  out = tmp_path / "s"
  assert cli.main(["sample", "--workdir", trained_next_token_workdir, "--num-images", "2", "--out", str(out)]) == 0
  before = snapshot(out)
  workdir = copy_run(trained_next_token_workdir, tmp_path)
  config = json.load(open(os.path.join(workdir, "config.json")))
  config["model"]["dim"] = 48
  json.dump(config, open(os.path.join(workdir, "config.json"), "w"))
  refused(capsys, ["sample", "--workdir", workdir, "--num-images", "2", "--out", str(out), "--overwrite"],
          "does not match this config")
  assert snapshot(out) == before


def test_sample_into_a_work_dir_is_refused(trained_next_token_workdir, tmp_path, capsys):
  workdir = copy_run(trained_next_token_workdir, tmp_path)
  before = snapshot(workdir)
  refused(capsys, ["sample", "--workdir", workdir, "--num-images", "2", "--out", workdir, "--overwrite"],
          "is a run's work directory")
  assert snapshot(workdir) == before


def test_demo_refuses_an_earlier_demo_without_overwrite(tmp_path):
  from ar_gen import demo  # pylint: disable=g-import-not-at-top
  from ar_gen.errors import OutputExists  # pylint: disable=g-import-not-at-top
  (tmp_path / "summary.json").write_text("{}")
  with pytest.raises(OutputExists, match="summary.json"):
    demo.run(str(tmp_path), quick=True, stages="classifier")
  assert (tmp_path / "summary.json").read_text() == "{}"


def test_converters_refuse_an_earlier_conversion_before_reading(tmp_path, capsys):
  (tmp_path / "out" / "tokenizer").mkdir(parents=True)
  (tmp_path / "x.pt").write_bytes(b"not read")
  refused(capsys, ["convert-llamagen", "--vq", str(tmp_path / "x.pt"), "--gpt", str(tmp_path / "x.pt"), "--size", "B",
                   "--out", str(tmp_path / "out")], "already holds results (tokenizer)")
  (tmp_path / "l.npz").write_bytes(b"old")
  refused(capsys, ["convert-lpips", str(tmp_path / "x.pt"), str(tmp_path / "x.pt"), "--out", str(tmp_path / "l.npz")],
          "already exists")
  assert (tmp_path / "l.npz").read_bytes() == b"old"


def test_torch_missing_is_one_line(tmp_path, monkeypatch):
  from ar_gen import torch_files  # pylint: disable=g-import-not-at-top
  from ar_gen.errors import UserError  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  (tmp_path / "w.pt").write_bytes(b"PK\x03\x04 a zip archive, as torch.save writes")
  with pytest.raises(UserError, match="pip install torch"):
    torch_files.load_state_dict(str(tmp_path / "w.pt"), "weights")


def test_lock_without_flock_checks_the_holder_pid(tmp_path, monkeypatch):
  from ar_gen import filelock  # pylint: disable=g-import-not-at-top
  from ar_gen.errors import WorkdirLocked  # pylint: disable=g-import-not-at-top
  from ar_gen.runs import lock  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(filelock, "lock", lambda fd, wait: False)  # a file system without flock
  monkeypatch.setattr(filelock, "unlock", lambda fd: pytest.fail("unlock of a lock that was never flocked"))
  alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (tmp_path / "train.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": alive.pid}))
    with pytest.raises(WorkdirLocked, match=f"pid {alive.pid}"):
      lock.WorkdirLock(str(tmp_path)).acquire()
  finally:
    alive.kill()
    alive.wait()
  held = lock.WorkdirLock(str(tmp_path)).acquire()  # the holder is dead now: taken over
  assert json.loads((tmp_path / "train.lock").read_text())["pid"] == os.getpid()
  held.release()
  (tmp_path / "train.lock").write_text(json.dumps({"host": "another-host", "pid": 1}))
  with pytest.raises(WorkdirLocked, match="another-host"):
    lock.WorkdirLock(str(tmp_path)).acquire()


def test_an_evaluator_that_would_fail_later_is_refused_up_front(trained_vq_workdir, tmp_path, capsys):
  workdir = tmp_path / "ar"
  refused(capsys, ["train", "--config", NEXT_TOKEN, "--workdir", str(workdir), *[f"--config.{o}" for o in AR_TINY],
                   "--config.total_steps=1", f"--config.frozen.tokenizer={trained_vq_workdir}",
                   f"--config.evals.sample_quality.features=classifier:{tmp_path / 'no_classifier'}",
                   "--config.evals.sample_quality.every_steps=1"],
          "evals.sample_quality.features", "no_classifier")
  assert not os.path.exists(workdir / "checkpoints")
