"""`ar-gen sample` and `ar-gen eval-tokenizer` spread their batches over every device of every process: 1 device,
8 (or 4) devices and 2 processes give the same images and numbers for the same seed. The sample batch (6) is not a
multiple of 8 devices: each batch is padded to the devices and the extra rows dropped."""

import os
import socket
import subprocess
import sys

import numpy as np

from tests.conftest import REPO


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
  return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          **extra}


def _command(workdir, out):
  return [sys.executable, "-m", "ar_gen.cli", "sample", "--workdir", workdir, "--num-images", "12", "--batch-size",
          "6", "--classes", "all", "--seed", "3", "--top-k", "20", "--out", str(out)]


def _images(out) -> np.ndarray:
  with np.load(os.path.join(out, "samples.npz")) as f:
    return f["arr_0"]


def test_one_device_eight_devices_and_two_processes_give_the_same_images(trained_next_token_workdir, tmp_path):
  for devices in (1, 8):
    proc = subprocess.run(_command(trained_next_token_workdir, tmp_path / f"d{devices}"), env=_env(devices),
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"'devices': {devices}" in proc.stdout
  port = free_port()
  procs = [subprocess.Popen(_command(trained_next_token_workdir, tmp_path / "p2"), cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(4, AR_GEN_COORDINATOR=f"localhost:{port}", AR_GEN_NUM_PROCESSES="2",
                                     AR_GEN_PROCESS_ID=str(i)))
           for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (stdout, stderr) in zip(procs, outputs):
    assert p.returncode == 0, stderr[-3000:]
    assert "'devices': 8" in stdout
  one = _images(tmp_path / "d1")
  assert one.shape[0] == 12 and one.std() > 0
  np.testing.assert_array_equal(_images(tmp_path / "d8"), one)
  np.testing.assert_array_equal(_images(tmp_path / "p2"), one)


def test_eval_tokenizer_on_four_devices_and_two_processes_gives_the_numbers_of_one(trained_vq_workdir, tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  results = {}
  for name, devices, processes in (("one", 1, 1), ("four", 4, 1), ("two_processes", 2, 2)):
    workdir = str(tmp_path / name)
    shutil.copytree(trained_vq_workdir, workdir)  # eval.json is written into the work directory
    cmd = [sys.executable, "-m", "ar_gen.cli", "eval-tokenizer", "--workdir", workdir, "--batch-size", "30",
           "--max-examples", "100"]
    port = free_port()
    procs = [subprocess.Popen(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=_env(devices, **({} if processes == 1 else dict(
                                  AR_GEN_COORDINATOR=f"localhost:{port}", AR_GEN_NUM_PROCESSES="2",
                                  AR_GEN_PROCESS_ID=str(i)))))
             for i in range(processes)]
    for p in procs:
      _, stderr = p.communicate(timeout=600)
      assert p.returncode == 0, stderr[-3000:]
    with open(os.path.join(workdir, "eval.json")) as f:
      results[name] = json.load(f)
  one = results["one"]
  assert one["num_examples"] == 100
  for name in ("four", "two_processes"):
    assert results[name]["num_examples"] == 100 and results[name]["codebook_usage"] == one["codebook_usage"]
    np.testing.assert_allclose([results[name]["psnr"], results[name]["ssim"], results[name]["perplexity"]],
                               [one["psnr"], one["ssim"], one["perplexity"]], rtol=1e-5, err_msg=name)
