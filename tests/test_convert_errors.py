"""Unfit input files to the four converters are one-line errors (`ar-gen CMD: error: ...`, exit 2) that name the
file and what it should be, never a traceback or torch's advice to unpickle objects, and they write nothing.

Files that need torch to make (truncated checkpoints, pickled objects, state dicts of the wrong model) are
skipped without it; missing paths, directories, empty files, text and random bytes need no torch.
"""

import fractions
import os

import numpy as np
import pytest

from ar_gen import cli, torch_files
from ar_gen.convert import common, llamagen
from ar_gen.convert import var as var_convert
from tests import golden
from tokenizers import lpips

# what each command's message says its first (and second) file should be
EXPECTED = {"convert-llamagen": ("LlamaGen's VQ tokenizer", "LlamaGen class-conditional GPT"),
            "convert-var": ("VAR's VQVAE", "VAR transformer"),
            "convert-lpips": ("VGG-16", "LPIPS package's VGG linear layers"),
            "convert-inception": ("pytorch-fid's FID Inception weights",)}
TORCH_FREE = ("missing", "directory", "text", "random", "empty")
GARBAGE = TORCH_FREE + ("truncated", "pickled object", "no tensors", "wrong keys", "a tensor")


def _argv(command, files, out):
  if command == "convert-llamagen":
    return [command, "--vq", files[0], "--gpt", files[1], "--size", "B", "--out", out]
  if command == "convert-var":
    return [command, "--vae", files[0], "--var", files[1], "--out", out]
  if command == "convert-lpips":
    return [command, files[0], files[1], "--out", out]
  return [command, files[0], "--out", out]


def _save(state_dict, path):
  """Writes a numpy state dict as a torch.save file (the way the released checkpoints nest it)."""
  torch = pytest.importorskip("torch")
  torch.save({"model": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()},
              "steps": 7}, path)
  return str(path)


def _garbage(kind, tmp_path):
  path = tmp_path / f"{kind.replace(' ', '_')}.pt"
  if kind == "directory":
    path.mkdir()
  elif kind == "text":
    path.write_text("model weights, honestly\n")
  elif kind == "random":
    path.write_bytes(np.random.default_rng(0).bytes(4096))
  elif kind == "empty":
    path.write_bytes(b"")
  elif kind != "missing":
    torch = pytest.importorskip("torch")
    whole = tmp_path / "whole.pt"
    torch.save({"fc.weight": torch.zeros(3, 2)}, whole)
    if kind == "truncated":
      path.write_bytes(whole.read_bytes()[:400])
    elif kind == "pickled object":
      torch.save({"model": {"fc.weight": torch.zeros(2)}, "ratio": fractions.Fraction(1, 3)}, path)
    elif kind == "no tensors":
      torch.save({"steps": 3, "name": "x"}, path)
    elif kind == "wrong keys":
      os.replace(whole, path)
    elif kind == "a tensor":
      torch.save(torch.zeros(3), path)
  return str(path)


def _good_files(command, tmp_path):
  """Files that pass reading for the positions before the garbage one (their shapes do not matter there)."""
  if command == "convert-llamagen":
    return [_save(golden.state_dict(golden.load("llamagen_tiny.npz"), "vq"), tmp_path / "vq.pt")]
  if command == "convert-var":
    return [_save(golden.state_dict(golden.load("var_tiny.npz"), "vae"), tmp_path / "vae.pt")]
  if command == "convert-lpips":
    return [_save({k: np.zeros(1, np.float32) for k in lpips.VGG_KEYS}, tmp_path / "vgg.pt")]
  return []


def _run(argv, capsys):
  code = cli.main(argv)
  err = capsys.readouterr().err
  return code, err


def _assert_one_line_error(code, err, command, path, expected):
  assert code == 2, err
  line = err.strip().splitlines()[-1]
  assert line.startswith(f"ar-gen {command}: error: ") and path in line and expected in line, err
  assert "Traceback" not in err and "weights_only" not in err, err


@pytest.mark.parametrize("kind", GARBAGE)
@pytest.mark.parametrize("command,position", [(c, i) for c, names in EXPECTED.items() for i in range(len(names))])
def test_garbage_file_is_a_one_line_error_naming_it(command, position, kind, tmp_path, capsys):
  if kind not in TORCH_FREE or position > 0:
    pytest.importorskip("torch")
  good = _good_files(command, tmp_path) if position else []
  bad = _garbage(kind, tmp_path)
  files = good + [bad] + [str(tmp_path / "unused.pt")] * (len(EXPECTED[command]) - position - 1)
  out = str(tmp_path / "out")
  code, err = _run(_argv(command, files, out), capsys)
  _assert_one_line_error(code, err, command, bad, EXPECTED[command][position])
  assert not os.path.exists(out)


def test_messages_say_what_is_wrong(tmp_path):
  expected = "a test model"
  for kind, reason in (("missing", "no such file"), ("directory", "is a directory"), ("text", "not a torch.save"),
                       ("random", "not a torch.save"), ("empty", "is empty")):
    with pytest.raises((ValueError, FileNotFoundError), match=reason):
      torch_files.load_state_dict(_garbage(kind, tmp_path), expected)
  pytest.importorskip("torch")
  for kind, reason in (("truncated", "zip archive, but truncated"),
                       ("pickled object", r"pickles a Python object \(fractions.Fraction\)"),
                       ("no tensors", "holds no tensors"), ("a tensor", "holds a Tensor, not a state dict"),
                       ("wrong keys", r"is not a test model: it lacks w, b \(it holds 1 tensor: fc.weight\)")):
    with pytest.raises(ValueError, match=reason):
      torch_files.load_state_dict(_garbage(kind, tmp_path), expected, ["w", "b"])


def test_a_checkpoint_with_training_arguments_and_bf16_weights_reads(tmp_path):
  torch = pytest.importorskip("torch")
  import argparse  # pylint: disable=g-import-not-at-top
  path = tmp_path / "ckpt.pt"
  torch.save({"model": {"w": torch.ones(2, dtype=torch.bfloat16), "n": torch.arange(3)},
              "args": argparse.Namespace(lr=1e-4, name="run"), "steps": 5}, path)
  sd = torch_files.load_state_dict(str(path), "a test model", ["w"])
  assert sd["w"].dtype == np.float32 and sd["n"].dtype == np.int64 and set(sd) == {"w", "n"}


@pytest.mark.parametrize("command,files,bad,expected,key", [
    ("convert-llamagen", ("gpt", "gpt"), 0, "LlamaGen's VQ tokenizer", "encoder.conv_in.weight"),
    ("convert-llamagen", ("vq", "var"), 1, "LlamaGen class-conditional GPT", "cls_embedding.embedding_table.weight"),
    ("convert-var", ("vq", "var"), 0, "VAR's VQVAE", "encoder.down.0.block.0.conv1.weight"),
    ("convert-var", ("vae", "gpt"), 1, "VAR transformer", "word_embed.weight"),
    ("convert-lpips", ("lin", "vgg"), 0, "VGG-16", "features.0.weight"),
    ("convert-lpips", ("vgg", "vgg"), 1, "LPIPS package's VGG linear layers", "lin0.model.1.weight"),
    ("convert-inception", ("vae",), 0, "FID Inception", "Conv2d_1a_3x3.conv.weight"),
])
def test_a_checkpoint_of_another_model_names_the_missing_keys(command, files, bad, expected, key, tmp_path,
                                                               capsys):
  pytest.importorskip("torch")
  llama, var = golden.load("llamagen_tiny.npz"), golden.load("var_tiny.npz")
  state_dicts = {"vq": golden.state_dict(llama, "vq"), "gpt": golden.state_dict(llama, "gpt"),
                 "vae": golden.state_dict(var, "vae"), "var": golden.state_dict(var, "var"),
                 "vgg": {k: np.zeros(1, np.float32) for k in lpips.VGG_KEYS},
                 "lin": {k: np.zeros(1, np.float32) for k in lpips.LIN_KEYS}}
  paths = [_save(state_dicts[name], tmp_path / f"{i}_{name}.pt") for i, name in enumerate(files)]
  out = str(tmp_path / "out")
  code, err = _run(_argv(command, paths, out), capsys)
  _assert_one_line_error(code, err, command, paths[bad], expected)
  assert key in err and not os.path.exists(out)


def test_a_gpt_of_another_size_is_named_before_anything_is_written(tmp_path, capsys):
  pytest.importorskip("torch")
  llama = golden.load("llamagen_tiny.npz")
  vq = _save(golden.state_dict(llama, "vq"), tmp_path / "vq.pt")
  gpt = _save(golden.state_dict(llama, "gpt"), tmp_path / "c2i_B_256.pt")
  out = str(tmp_path / "out")
  code, err = _run(_argv("convert-llamagen", [vq, gpt], out), capsys)
  _assert_one_line_error(code, err, "convert-llamagen", gpt, "2 layers of width 64 (no LlamaGen size), not --size B")
  assert not os.path.exists(out)


def test_a_key_missing_deep_in_the_state_dict_is_named():
  sd = golden.state_dict(golden.load("llamagen_tiny.npz"), "gpt")
  del sd["layers.1.ffn_norm.weight"]
  with pytest.raises(ValueError, match=r"c2i\.pt is not a LlamaGen class-conditional GPT.*layers.1.ffn_norm.weight"):
    common.mapped(llamagen.gpt_params, sd, "c2i.pt", llamagen.GPT_FILE)
  with pytest.raises(ValueError, match=r"var\.pth does not fit .*shared AdaLN"):
    sd = dict(golden.state_dict(golden.load("var_tiny.npz"), "var"), **{"shared_ada_lin.1.weight": np.zeros(2)})
    common.mapped(var_convert.var_model_config, sd, "var.pth", var_convert.VAR_FILE)


@pytest.mark.slow
def test_a_failure_after_the_first_work_directory_removes_it(tmp_path):
  fixture = golden.load("var_tiny.npz")
  var_sd = golden.state_dict(fixture, "var")
  var_sd["head.bias"] = var_sd["head.bias"][:-1]  # reads and maps, fails the shape check of the second model
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=r"var_d16\.pth: .*head.*bias"):
    var_convert.convert_state_dicts(golden.state_dict(fixture, "vae"), var_sd, str(out), image_size=8,
                                    sources=("vae.pth", "var_d16.pth"))
  assert not out.exists()


def test_only_what_the_failed_block_created_is_removed(tmp_path):
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("the user's")
  with pytest.raises(RuntimeError), common.removed_on_failure(str(tmp_path / "out"), str(tmp_path / "out" / "a")):
    (tmp_path / "out" / "a").mkdir()
    raise RuntimeError("a late failure")
  assert os.listdir(tmp_path / "out") == ["keep.txt"]
