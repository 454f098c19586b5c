"""`ar-gen bench fid`: Inception feature extraction, images/s of ar-gen's jitted network and of pytorch-fid's.

Both run the FID Inception (random weights: speed does not depend on their values) on the same random images at
the same batch size, after one warm-up batch. pytorch-fid runs in a subprocess of `--torch-python` (an interpreter
with torch and pytorch-fid installed; default: this one), with `torch.no_grad()` and all CPU threads; where it is
missing the table says so and reports ar-gen alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ar_gen import table
from ar_gen.eval.inception import InceptionV3

TORCH_SCRIPT = r"""
import json, os, sys, time
import numpy as np
import torch
try:
  import torchvision  # noqa: F401
except RuntimeError:  # a PyPI torchvision beside a CPU-only torch: register its two ops, then import again
  lib = torch.library.Library("torchvision", "DEF")
  lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
  lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
  import torchvision  # noqa: F401
import pytorch_fid.inception as pi
pi.load_state_dict_from_url = lambda *a, **k: None
original = torchvision.models.Inception3.load_state_dict
torchvision.models.Inception3.load_state_dict = lambda self, sd, *a, **k: None if sd is None else original(self, sd)
torch.set_num_threads(os.cpu_count())
images = torch.from_numpy(np.load(sys.argv[1])).permute(0, 3, 1, 2).float() / 255.0
batch = int(sys.argv[2])
model = pi.InceptionV3([3]).eval()
with torch.no_grad():
  model(images[:batch])
  start = time.perf_counter()
  for i in range(0, len(images), batch):
    model(images[i:i + batch])
  seconds = time.perf_counter() - start
print(json.dumps({"images_per_second": len(images) / seconds, "torch": torch.__version__}))
"""


def ar_gen_images_per_second(images_NHWC: np.ndarray, batch: int) -> float:
  graphdef, state = nnx.split(InceptionV3(rngs=nnx.Rngs(0)))
  fn = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x.astype(jnp.float32) / 255.0))
  jax.block_until_ready(fn(state, images_NHWC[:batch]))
  start = time.perf_counter()
  for i in range(0, len(images_NHWC), batch):
    jax.block_until_ready(fn(state, images_NHWC[i:i + batch]))
  return len(images_NHWC) / (time.perf_counter() - start)


def pytorch_fid_images_per_second(images_NHWC: np.ndarray, batch: int, python: str) -> tuple[float | None, str]:
  """(images/s, note); None with the reason when pytorch-fid cannot run."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "images.npy")
    np.save(path, images_NHWC)
    proc = subprocess.run([python, "-c", TORCH_SCRIPT, path, str(batch)], capture_output=True, text=True,
                          check=False)
  if proc.returncode != 0:
    last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    return None, f"pytorch-fid did not run with {python}: {last}"
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  return result["images_per_second"], f"torch {result['torch']}"


def run(num_images: int = 64, batch_size: int = 16, image_size: int = 256, torch_python: str | None = None,
        out: str | None = None) -> dict:
  if num_images < batch_size or num_images % batch_size:
    raise ValueError(f"--num-images ({num_images}) must be a positive multiple of --batch-size ({batch_size})")
  images = np.random.default_rng(0).integers(0, 256, (num_images, image_size, image_size, 3), dtype=np.uint8)
  print(f"bench fid: {num_images} images of {image_size}x{image_size}, batch {batch_size}, "
        f"{jax.devices()[0].device_kind} x {jax.device_count()}", flush=True)
  ours = ar_gen_images_per_second(images, batch_size)
  theirs, note = pytorch_fid_images_per_second(images, batch_size, torch_python or sys.executable)
  row = {"batch": batch_size, "ar_gen": ours, "pytorch_fid": theirs,
         "ratio": ours / theirs if theirs else None}
  print(table.format_table([row], [("batch", "batch", "d"), ("ar_gen", "ar-gen img/s", ".2f"),
                                   ("pytorch_fid", "pytorch-fid img/s", ".2f"),
                                   ("ratio", "ar-gen / pytorch-fid", ".2f")]))
  print(f"pytorch-fid: {note}")
  result = {"num_images": num_images, "image_size": image_size, "note": note, **row}
  if out:
    with open(out, "w") as f:
      json.dump(result, f, indent=2)
  return result
