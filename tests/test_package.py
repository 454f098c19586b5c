"""The package installs as `ar-gen` with import packages `ar_gen` and `tokenizers`, and detects the HF clash."""

import types

import pytest

import ar_gen
import tokenizers
from ar_gen import cli


def test_own_tokenizers_package_passes_the_check():
  assert ar_gen.check_tokenizers_package(tokenizers) is tokenizers


def test_huggingface_tokenizers_clash_is_named():
  impostor = types.ModuleType("tokenizers")
  impostor.__file__ = "/site-packages/tokenizers/__init__.py"
  with pytest.raises(ImportError, match=r"HuggingFace.*virtual environment"):
    ar_gen.check_tokenizers_package(impostor)


def test_cli_lists_the_contract_subcommands(capsys):
  with pytest.raises(SystemExit):
    cli.main(["--help"])
  out = capsys.readouterr().out
  for name in ("train", "eval-tokenizer", "sample", "demo"):
    assert name in out


def test_config_overrides_are_split_from_flags():
  rest, overrides = cli.split_overrides(["train", "--config", "c.py", "--config.a.b=3", "--config.x", "y"])
  assert rest == ["train", "--config", "c.py"]
  assert overrides == ["a.b=3", "x=y"]
