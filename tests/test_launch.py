"""launch/*.py --dry-run print every command, worker, environment; missing inputs are refused by name; AOT compile."""

import os
import subprocess
import sys

import pytest

from ar_gen import cli
from ar_gen.train import aot
from tests.conftest import CONFIGS, REPO

TRAIN = ["--", "--config", "configs/imagenet256_vq16.py", "--workdir", "/shared/runs/vq16", "--config.batch_size=256"]


def _launch(script, *args):
  return subprocess.run([sys.executable, os.path.join(REPO, "launch", script), *args], capture_output=True,
                        text=True, timeout=60)


def test_tpu_dry_run_creates_ships_installs_trains_on_all_workers_and_deletes():
  proc = _launch("tpu.py", "--name", "argen-v5e", "--zone", "us-west4-a", "--project", "p1", "--create",
                 "--accelerator-type", "v5litepod-16", "--version", "v2-alpha-tpuv5-lite", "--spot", "--delete-after",
                 "--dry-run", *TRAIN)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert lines[0] == ("gcloud compute tpus tpu-vm create argen-v5e --zone us-west4-a --project p1 "
                      "--accelerator-type v5litepod-16 --version v2-alpha-tpuv5-lite --spot")
  assert lines[1].startswith(f"git -C {REPO} archive --format=tar.gz -o /tmp/ar-gen.tar.gz HEAD")
  assert "tpu-vm scp /tmp/ar-gen.tar.gz 'argen-v5e:~/ar-gen.tar.gz' --worker=all" in lines[2]
  assert "--worker=all" in lines[3] and "pip install -q -e" in lines[3] and ".[tpu]" in lines[3]
  assert "--worker=all" in lines[4] and (".venv/bin/ar-gen train --config configs/imagenet256_vq16.py --workdir "
                                         "/shared/runs/vq16 --config.batch_size=256") in lines[4]
  assert lines[5] == "gcloud compute tpus tpu-vm delete argen-v5e --zone us-west4-a --project p1 --quiet"
  assert len(lines) == 6


def test_slurm_dry_run_prints_the_sbatch_script_and_the_submit_command(tmp_path):
  proc = _launch("slurm.py", "--nodes", "4", "--gpus-per-node", "8", "--time", "24:00:00", "--partition", "gpu",
                 "--account", "lab", "--requeue", "--log-dir", str(tmp_path), "--dry-run", *TRAIN)
  assert proc.returncode == 0, proc.stderr
  out = proc.stdout
  for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
               "#SBATCH --time=24:00:00", "#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --requeue",
               "#SBATCH --signal=TERM@300", f"#SBATCH --output={tmp_path}/%x-%j.out", f"cd {REPO}",
               "export XLA_PYTHON_CLIENT_MEM_FRACTION="):
    assert line in out, line
  assert (f"srun --kill-on-bad-exit=1 {REPO}/.venv/bin/ar-gen train --config configs/imagenet256_vq16.py "
          "--workdir /shared/runs/vq16 --config.batch_size=256") in out
  assert out.strip().endswith(f"sbatch {tmp_path}/ar-gen.sbatch")
  assert not os.path.exists(tmp_path / "ar-gen.sbatch")  # a dry run writes nothing


def test_local_dry_run_gives_each_process_its_id_coordinator_and_devices():
  proc = _launch("local.py", "--processes", "3", "--devices-per-process", "2", "--port", "4321", "--dry-run", *TRAIN)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert line.startswith(f"AR_GEN_COORDINATOR=localhost:4321 AR_GEN_NUM_PROCESSES=3 AR_GEN_PROCESS_ID={i} "
                           "JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 ")
    assert line.endswith("-m ar_gen.cli train --config configs/imagenet256_vq16.py --workdir /shared/runs/vq16 "
                         "--config.batch_size=256")
  gpu = _launch("local.py", "--processes", "2", "--devices-per-process", "4", "--platform", "gpu", "--dry-run", *TRAIN)
  assert "CUDA_VISIBLE_DEVICES=0,1,2,3 " in gpu.stdout and "CUDA_VISIBLE_DEVICES=4,5,6,7 " in gpu.stdout


@pytest.mark.parametrize("script, args, message", [
    ("tpu.py", ["--zone", "z", "--dry-run", *TRAIN], "the following arguments are required: --name"),
    ("tpu.py", ["--name", "n", "--zone", "z", "--create", "--dry-run", *TRAIN],
     "--create needs --accelerator-type and --version"),
    ("tpu.py", ["--name", "n", "--zone", "z", "--dry-run"], "give the `ar-gen train` arguments after `--`"),
    ("slurm.py", ["--nodes", "2", "--time", "1:00:00", "--dry-run", *TRAIN], "required: --gpus-per-node"),
    ("slurm.py", ["--nodes", "2", "--gpus-per-node", "8", "--time", "1:00:00", "--dry-run", "--", "--config", "c.py"],
     "lack --workdir"),
    ("local.py", ["--processes", "2", "--dry-run", "--", "--workdir", "w"], "lack --config"),
    ("local.py", ["--processes", "0", "--dry-run", *TRAIN], "must be at least 1"),
])
def test_launchers_refuse_missing_inputs_by_name(script, args, message):
  proc = _launch(script, *args)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("name, expected", [("v5e-16", "v5e:4x4"), ("v5litepod-8", "v5e:2x4"), ("v6e-64", "v6e:8x8"),
                                            ("v4-32", "v4:2x2x4"), ("v5p-128", "v5p:4x4x4"), ("v5e:2x2", "v5e:2x2")])
def test_topology_names(name, expected):
  assert aot.topology_name(name) == expected


def test_compile_without_libtpu_says_what_to_install(capsys):
  pytest.importorskip("jax")
  try:
    import libtpu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    pytest.skip("libtpu is installed here: the compile itself is exercised instead (docs/scaling.md)")
  except ImportError:
    pass
  assert cli.main(["compile", "--config", os.path.join(CONFIGS, "mnist_vq.py"), "--topology", "v5e-16"]) == 2
  assert "needs libtpu: pip install -e '.[tpu]'" in capsys.readouterr().err
  assert cli.main(["compile", "--config", os.path.join(CONFIGS, "mnist_vq.py"), "--topology", "v9-16"]) == 2
  assert "--topology must look like" in capsys.readouterr().err


def _fake(path, name, body):
  path.mkdir(parents=True, exist_ok=True)
  script = path / name
  script.write_text(f"#!/bin/sh\n{body}\n")
  script.chmod(0o755)


@pytest.mark.parametrize("new_python", [True, False])
def test_tpu_venv_uses_a_python_of_at_least_3_11_else_installs_one(tmp_path, new_python):
  sys.path.insert(0, os.path.join(REPO, "launch"))
  import tpu  # pylint: disable=g-import-not-at-top
  bin_dir, log = tmp_path / "bin", tmp_path / "log"
  # python3 is too old (its version check fails); python3.12, where present, is new enough
  _fake(bin_dir, "python3", f'case "$1" in -c) exit 1;; *) echo "python3 $*" >> {log};; esac')
  if new_python:
    _fake(bin_dir, "python3.12", f'case "$1" in -c) exit 0;; *) echo "python3.12 $*" >> {log};; esac')
  _fake(tmp_path / "home" / ".local" / "bin", "uv", f'echo "uv $*" >> {log}')
  env = {"PATH": str(bin_dir), "HOME": str(tmp_path / "home")}  # only the fakes: no python of this machine
  subprocess.run(["/bin/bash", "-c", tpu.venv_command()], check=True, env=env, cwd=tmp_path)
  lines = log.read_text().splitlines()
  if new_python:
    assert lines == ["python3.12 -m venv .venv"]
  else:
    assert lines == ["python3 -m pip install -q --user uv", "uv venv --seed --python 3.11 .venv"]
