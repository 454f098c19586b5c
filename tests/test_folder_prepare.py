"""Dataset preparation under concurrency and crashes: `folder:` datasets get one preparer (a file lock) and a
killed preparer leaves nothing that looks prepared; an unprepared `tfds:` dataset fails at once, offline."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from ar_gen.data import folder, sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES, PER_CLASS = 10, 100

# Imports first, then waits for the file GO so that both processes open the dataset at the same moment; prints
# the label counts of every record.
OPEN_AND_COUNT = """
import collections, json, os, sys, time
import tensorflow_datasets
from ar_gen.data import sources
images, data_dir, go = sys.argv[1:4]
print("ready", flush=True)
while not os.path.exists(go):
  time.sleep(0.01)
src = sources.get_source("folder:" + images, data_dir=data_dir)
print(json.dumps(sorted(collections.Counter(int(src[i]["label"]) for i in range(len(src))).items())))
"""

# Prepares, but stops for good after 300 examples (having said so), to be killed there.
PREPARE_AND_STALL = """
import sys, time
from ar_gen.data import folder, sources
builder_class = folder._builder_class()
generate = builder_class._generate_examples

def stalling(self):
  for i, example in enumerate(generate(self)):
    if i == 300:
      print("stalled", flush=True)
      time.sleep(600)
    yield example

builder_class._generate_examples = stalling
sources.get_source("folder:" + sys.argv[1], data_dir=sys.argv[2])
"""


def _make_images(root):
  rng = np.random.default_rng(0)
  for c in range(CLASSES):
    os.makedirs(root / f"class{c}")
    for i in range(PER_CLASS):
      Image.fromarray(rng.integers(0, 256, (4, 4, 3), np.uint8)).save(root / f"class{c}" / f"{i}.png")
  return str(root)


def _python(script, *args):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _leftovers(data_dir):
  return [d for _, dirs, _ in os.walk(data_dir) for d in dirs if d.startswith("incomplete.")]


@pytest.mark.parametrize("attempt", range(3))
def test_two_processes_opening_a_new_folder_at_once_both_read_it(tmp_path, attempt):
  images, data_dir, go = _make_images(tmp_path / "images"), tmp_path / f"tfds{attempt}", tmp_path / "go"
  procs = [_python(OPEN_AND_COUNT, images, data_dir, go) for _ in range(2)]
  for p in procs:
    assert p.stdout.readline().strip() == "ready", p.communicate(timeout=60)[1][-3000:]
  go.touch()
  results = [p.communicate(timeout=120) for p in procs]
  for p, (out, err) in zip(procs, results):
    assert p.returncode == 0, err[-3000:]
  counts = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
  assert counts[0] == counts[1] == [[c, PER_CLASS] for c in range(CLASSES)]
  assert not _leftovers(data_dir)


def test_a_preparer_killed_midway_leaves_a_dataset_the_next_open_prepares(tmp_path):
  images, data_dir = _make_images(tmp_path / "images"), str(tmp_path / "tfds")
  proc = _python(PREPARE_AND_STALL, images, data_dir)
  try:
    lines = iter(proc.stdout.readline, "")  # TFDS prints its progress on stdout too
    assert "stalled" in (line.strip() for line in lines), proc.stderr.read()[-3000:]
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
  builder, builder_dir = folder.folder_builder(images, data_dir)
  assert not builder.is_prepared()
  assert _leftovers(data_dir) and os.path.exists(builder_dir + ".lock")
  go = tmp_path / "go"
  go.touch()
  reader = _python(OPEN_AND_COUNT, images, data_dir, go)
  out, err = reader.communicate(timeout=120)
  assert reader.returncode == 0, err[-3000:]
  assert json.loads(out.strip().splitlines()[-1]) == [[c, PER_CLASS] for c in range(CLASSES)]
  assert folder.folder_builder(images, data_dir)[0].is_prepared() and not _leftovers(data_dir)


def test_an_unprepared_tfds_dataset_fails_at_once_without_the_network(tmp_path, monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError(f"the network was used: {args}")

  monkeypatch.setattr(socket, "getaddrinfo", no_network)
  monkeypatch.setattr(socket.socket, "connect", no_network)
  start = time.monotonic()
  with pytest.raises(FileNotFoundError) as e:
    sources.get_source("tfds:cifar10:train", data_dir=str(tmp_path))
  message = str(e.value)
  assert time.monotonic() - start < 30
  assert "tfds:cifar10:train" in message and str(tmp_path / "cifar10") in message and "does not exist" in message
  assert f"tfds build cifar10 --data_dir={tmp_path} --file_format=array_record" in message
  assert not os.listdir(tmp_path)


def test_unprepared_imagenet_names_the_command_that_prepares_it_without_tensorflow(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"ar-gen prepare-imagenet --input .* --data-dir {tmp_path}"):
    sources.get_source("tfds:imagenet2012:train", data_dir=str(tmp_path))


def test_a_tfds_dataset_folder_without_the_split_is_named(tmp_path):
  (tmp_path / "cifar10").mkdir()
  with pytest.raises(FileNotFoundError, match=r"tfds:cifar10:test is not prepared.*TFDS could not open it"):
    sources.get_source("tfds:cifar10:test", data_dir=str(tmp_path))
