"""The import-linter layer contracts (pyproject.toml) hold, and they do fail on an import against the layers."""

import os
import shutil
import subprocess
import sys

from tests.conftest import REPO

LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(root: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": root}
  return subprocess.run([LINT, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_are_kept():
  proc = _lint(REPO)
  assert proc.returncode == 0, proc.stdout[-3000:]
  assert "2 kept, 0 broken" in proc.stdout


def test_a_model_importing_the_trainer_breaks_the_layers(tmp_path):
  for name in ("ar_gen", "tokenizers"):
    shutil.copytree(os.path.join(REPO, name), tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(os.path.join(REPO, "pyproject.toml"), tmp_path / "pyproject.toml")
  model = tmp_path / "ar_gen" / "models" / "next_token.py"
  model.write_text(model.read_text().replace("from ar_gen.layout import TokenLayout\n",
                                             "from ar_gen.layout import TokenLayout\nfrom ar_gen.train import trainer\n"))
  proc = _lint(str(tmp_path))
  assert proc.returncode != 0
  assert "ar_gen.models is not allowed to import ar_gen.train" in proc.stdout
  assert "ar_gen.models.next_token -> ar_gen.train.trainer" in proc.stdout
