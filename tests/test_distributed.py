"""Scale-out and faults: sharded mesh vs one device, 2 processes vs 1, kill and resume, checkpoint fallback, NaN;
where the sharding rules put each weight.

Multi-device and multi-process runs are `ar-gen train` subprocesses with fake CPU devices
(--xla_force_host_platform_device_count) so each gets its own device count.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec as P

from ar_gen import distributed
from ar_gen.layout import TokenLayout
from ar_gen.models.next_token import NextTokenModel
from ar_gen.runs import checkpoint, sharding
from ar_gen.runs.run import restore_run
from ar_gen.train import trainer
from tests.conftest import CONFIGS, REPO, tiny_config

TINY_ARGS = ["--config.model.channels=8", "--config.model.channel_mult=(1,2)", "--config.model.z_channels=16",
             "--config.batch_size=8", "--config.data.image_size=16", "--config.log_every_steps=1",
             "--config.vis_every_steps=0", "--config.data.num_threads=1", "--config.sharding.fsdp_min_size=0"]


def _env(devices: int) -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _train(workdir, devices=1, *extra, config="mnist_vq.py", check=True):
  cmd = [sys.executable, "-m", "ar_gen.cli", "train", "--config", os.path.join(CONFIGS, config), "--workdir",
         str(workdir), *TINY_ARGS, *extra]
  proc = subprocess.run(cmd, env=_env(devices), cwd=REPO, capture_output=True, text=True, timeout=600)
  if check:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc


def _metrics(workdir) -> dict[int, dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r for r in rows}


def _losses(workdir, steps):
  m = _metrics(workdir)
  return np.array([m[s]["loss"] for s in steps])


def test_a_data2_fsdp4_mesh_of_8_devices_gives_the_losses_of_one_device(tmp_path):
  sharded = _train(tmp_path / "mesh", 8, "--config.total_steps=3", "--config.mesh.data=2", "--config.mesh.fsdp=4")
  assert "'data': 2, 'fsdp': 4" in sharded.stderr and "'fsdp'" in sharded.stderr.split("state shardings:")[1]
  _train(tmp_path / "one", 1, "--config.total_steps=3")
  np.testing.assert_allclose(_losses(tmp_path / "mesh", range(1, 4)), _losses(tmp_path / "one", range(1, 4)),
                             atol=1e-5, rtol=0)


@pytest.mark.slow
def test_launch_local_2_processes_x_2_devices_equal_1_process_x_4_devices_across_a_preemption(tmp_path):
  cmd = [sys.executable, os.path.join(REPO, "launch", "local.py"), "--processes", "2", "--devices-per-process", "2",
         "--", "--config", os.path.join(CONFIGS, "mnist_vq.py"), "--workdir", str(tmp_path / "two"), *TINY_ARGS,
         "--config.total_steps=5", "--config.mesh.data=2", "--config.mesh.fsdp=2"]
  # both processes get a SIGTERM after step 3, agree to stop, save and exit 0; the rerun finishes steps 4-5
  preempt = ["--config.fault.sigterm_after_step=3", "--config.fault.preemption_check_steps=1"]
  proc = subprocess.run(cmd + preempt, env=_env(2), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-4000:]
  assert "[p0]" in proc.stdout and "[p1]" in proc.stdout and "process 1 of 2, 2 local / 4 global" in proc.stdout
  assert "stopped by SIGTERM after step 3" in proc.stdout and max(_metrics(tmp_path / "two")) == 3
  proc = subprocess.run(cmd, env=_env(2), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0 and "resumed from step 3" in proc.stdout, proc.stdout[-4000:]
  _train(tmp_path / "one", 4, "--config.total_steps=5", "--config.mesh.data=2", "--config.mesh.fsdp=2")
  np.testing.assert_allclose(_losses(tmp_path / "two", range(1, 6)), _losses(tmp_path / "one", range(1, 6)),
                             atol=1e-5, rtol=0)


def _final_params(workdir):
  ckpt = checkpoint.Checkpointer(str(workdir), async_save=False)
  try:
    step = ckpt.latest_step()
    restored = ckpt.manager.restore(step, args=checkpoint.ocp.args.Composite(
        state=checkpoint.ocp.args.StandardRestore()))
  finally:
    ckpt.close()
  return step, jax.tree.leaves(restored["state"]["params"])


@pytest.mark.slow  # ~2 min; bitwise resume is also tested by test_trainer.py
def test_sigterm_saves_and_exits_0_and_the_restart_repeats_the_uninterrupted_run_bitwise(tmp_path):
  common = ["--config.total_steps=10", "--config.ckpt_every_steps=4"]
  _train(tmp_path / "straight", 1, *common)
  first = _train(tmp_path / "killed", 1, *common, "--config.fault.sigterm_after_step=5")
  assert "SIGTERM received" in first.stderr and "stopped by SIGTERM after step 5" in first.stderr
  assert max(_metrics(tmp_path / "killed")) == 5
  second = _train(tmp_path / "killed", 1, *common)
  assert "resumed from step 5" in second.stderr
  straight, resumed = _metrics(tmp_path / "straight"), _metrics(tmp_path / "killed")
  for step in range(6, 11):
    for key in ("loss", "grad_norm", "psnr"):
      assert resumed[step][key] == straight[step][key], (step, key)
  (step_a, params_a), (step_b, params_b) = _final_params(tmp_path / "straight"), _final_params(tmp_path / "killed")
  assert step_a == step_b == 10
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _truncate_largest_file(directory):
  files = [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs]
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)
  return largest


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
  workdir = str(tmp_path / "run")
  config = tiny_config("mnist_vq.py", "total_steps=6", "ckpt_every_steps=2", "sharding.fsdp_min_size=0")
  trainer.train(config, workdir, stop_after_steps=4)
  before = _metrics(workdir)
  _truncate_largest_file(os.path.join(workdir, "checkpoints", "4"))
  trainer.train(config, workdir)
  assert "checkpoint step 4" in caplog.text and "unreadable" in caplog.text
  assert os.path.isdir(os.path.join(workdir, "checkpoints_unreadable", "4"))
  after = _metrics(workdir)
  assert after[3]["loss"] == before[3]["loss"] and after[4]["loss"] == before[4]["loss"]  # redone from step 2
  assert max(after) == 6


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path / "run")
  config = tiny_config("mnist_vq.py", "total_steps=8", "ckpt_every_steps=2", "fault.inject_nan_at_step=3")
  with pytest.raises(FloatingPointError, match=r"not finite at step 3 .*last good checkpoint is step 2"):
    trainer.train(config, workdir)
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  try:
    assert ckpt.manager.all_steps() == [2]
  finally:
    ckpt.close()
  _, state, step = restore_run(workdir)
  assert step == 2 and all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


@pytest.mark.parametrize("environ, kind", [
    ({}, "single"),
    ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, "single"),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}, "slurm"),
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}, "single"),
    ({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, "tpu-pod"),
    ({"AR_GEN_COORDINATOR": "localhost:1234"}, "explicit"),
])
def test_initialize_distributed_detects_the_environment(environ, kind):
  assert distributed.detect(environ) == kind


def test_initialize_distributed_is_a_no_op_alone_and_refuses_a_half_explicit_setup():
  assert distributed.initialize_distributed(environ={}) == "single"
  with pytest.raises(ValueError, match="--num-processes and --process-id"):
    distributed.initialize_distributed("localhost:1234", environ={})


def test_logical_axis_rules_place_the_transformer_and_its_optimizer_state():
  mesh = AbstractMesh((2, 4, 2), ("data", "fsdp", "tensor"))
  model = nnx.eval_shape(lambda: NextTokenModel(TokenLayout.raster((4, 4), 64), 10, 2, 64, 4, rngs=nnx.Rngs(0)))
  _, params, _ = nnx.split(model, nnx.Param, ...)
  state = {"params": params, "ema": params, "opt_state": jax.eval_shape(optax.adam(1e-3).init, params),
           "step": jax.ShapeDtypeStruct((), jnp.int32)}
  placed = sharding.state_shardings(state, sharding.logical_names(params), mesh, None)
  spec = lambda tree, *keys: _get(tree, keys).spec
  layer = ("transformer", "layers", 0)
  assert spec(placed["params"], *layer, "attention", "wqkv", "kernel") == P("fsdp", "tensor")
  assert spec(placed["params"], *layer, "feed_forward", "w2", "kernel") == P("tensor", "fsdp")
  assert spec(placed["params"], "tok_embeddings", "embedding") == P("tensor", "fsdp")
  assert spec(placed["params"], "cls_embedding", "embedding") == P(None, "fsdp")  # 11 classes: not split
  assert spec(placed["params"], "norm", "weight") == P()
  assert spec(placed["ema"], *layer, "attention", "wqkv", "kernel") == P("fsdp", "tensor")
  mu = placed["opt_state"][0].mu
  assert spec(mu, *layer, "attention", "wqkv", "kernel") == P("fsdp", "tensor")
  assert placed["step"].spec == P()
  # unnamed weights (convolutions): the largest dimension the fsdp size divides, above the size threshold
  assert sharding.mesh_spec(P(), (3, 3, 8, 16), mesh, {}, 0) == P(None, None, None, "fsdp")
  assert sharding.mesh_spec(P(), (3, 3, 8, 16), mesh, {}, 10 ** 6) == P()
  with pytest.raises(ValueError, match=r"mesh axes \['model'\]"):
    sharding.state_shardings(state, sharding.logical_names(params), mesh,
                             ml_collections.ConfigDict({"rules": (("embed", "model"),)}))


def _get(tree, keys):
  for key in keys:
    tree = tree[key]
  return tree
