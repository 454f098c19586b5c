"""`ar-gen` on bad input: each error names the problem and the command exits with status 2."""

import os

from ar_gen import cli
from tests.conftest import CONFIGS

VQ = os.path.join(CONFIGS, "mnist_vq.py")


def test_misspelled_key_is_named_with_its_nearest(tmp_path, capsys):
  code = cli.main(["train", "--config", VQ, "--workdir", str(tmp_path), "--config.optimizer.wamup_steps=3"])
  err = capsys.readouterr().err
  assert code == 2 and "'optimizer.wamup_steps'" in err and "'optimizer.warmup_steps'" in err


def test_missing_dataset_folder_is_named(tmp_path, capsys):
  missing = tmp_path / "no-such-images"
  code = cli.main(["train", "--config", VQ, "--workdir", str(tmp_path / "w"), f"--config.data.train=folder:{missing}",
                   f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.total_steps=1"])
  assert code == 2 and "no-such-images" in capsys.readouterr().err


def test_eval_without_checkpoint_says_so(tmp_path, capsys):
  code = cli.main(["eval-tokenizer", "--workdir", str(tmp_path)])
  assert code == 2 and "config.json" in capsys.readouterr().err


def test_non_image_file_in_dataset_folder_is_named(tmp_path, capsys):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  (tmp_path / "imgs" / "a").mkdir(parents=True)
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "imgs" / "a" / "ok.png")
  (tmp_path / "imgs" / "a" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
  code = cli.main(["train", "--config", VQ, "--workdir", str(tmp_path / "w"),
                   f"--config.data.train=folder:{tmp_path / 'imgs'}", f"--config.data.data_dir={tmp_path / 'tfds'}"])
  err = capsys.readouterr().err
  assert code == 2 and "broken.jpg" in err and "not a readable image" in err
