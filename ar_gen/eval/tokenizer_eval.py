"""`ar-gen eval-tokenizer`: PSNR, SSIM, codebook usage and perplexity of a trained tokenizer on held-out data.

Uses the EMA weights when the run kept them. Each process evaluates its share of the split (`eval_batches`), its
batches sharded over its local devices (padded to a multiple of their count); per-image numbers and code counts
are gathered from every process, so 1 device, several devices and several processes give the same numbers.
Writes `DIR/eval.json` and `DIR/images/eval_recon.png` (originals over reconstructions). Usage is the fraction of
the K codes used at least once over the whole held-out split.
For a progressive layout (several token maps: multi-scale, frequency bands) `psnr_by_scales[k]` is the PSNR of
decoding from the first k + 1 maps only (the progressive preview; the last entry is `psnr`), and
`DIR/images/eval_scales.png` shows the originals over the decodings from 1, 2, ..., K maps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ar_gen import config as config_lib
from ar_gen import fileio, images
from ar_gen.data import pipeline
from ar_gen.distributed import all_processes
from ar_gen.runs.run import restore_run
from tokenizers import losses
from tokenizers.task import perplexity


def evaluate(workdir: str, max_examples: int | None = None, batch_size: int = 100,
             grid_examples: int = 10) -> dict:
  """Evaluates the tokenizer of `workdir` on its config's `data.eval`; returns and writes the numbers."""
  config = config_lib.load_workdir_config(workdir)
  if config.task != "tokenizer":
    raise ValueError(f"{workdir} holds a {config.task!r} run; `ar-gen eval-tokenizer` needs a tokenizer's work "
                     "directory (for an AR model: `ar-gen sample`, then `ar-gen fid`)")
  if batch_size < 1 or (max_examples is not None and max_examples < 1):
    raise ValueError(f"--batch-size and --max-examples must be at least 1, got {batch_size} and {max_examples}")
  run, state, step = restore_run(workdir)
  tokenizer = run.task.export(run.model(state))
  k = tokenizer.codebook_size
  layout = tokenizer.layout
  num_scales = len(layout.maps) if layout.progressive else 0

  devices = jax.local_devices()
  sharded = NamedSharding(Mesh(np.asarray(devices), ("batch",)), P("batch"))

  @jax.jit
  def measure(x):
    indices = tokenizer.encode(x)
    x_rec = tokenizer.decode(indices)
    prefixes = [tokenizer.decode(indices, n) for n in range(1, num_scales)]
    by_scale = jnp.stack([losses.psnr(p, x) for p in prefixes + [x_rec]], axis=1) if num_scales else None
    return losses.psnr(x_rec, x), losses.ssim(x_rec, x), indices, x_rec, by_scale, prefixes

  vectors = layout.kind == "vectors"  # a continuous tokenizer: token moments instead of code counts
  psnr, ssim, hist, originals, recons, by_scales, previews = [], [], np.zeros(3 if vectors else k, np.float64), [], [], [], []
  batches = pipeline.eval_batches(run.config.data, batch_size, max_examples=max_examples)
  for batch in tqdm.tqdm(batches, desc="eval-tokenizer", unit="batch", disable=jax.process_index() != 0):
    n = len(batch["image"])
    padded = np.concatenate([batch["image"], np.repeat(batch["image"][-1:], -n % len(devices), axis=0)])
    p, s, indices, x_rec, by_scale, prefixes = jax.tree.map(
        lambda a: a[:n], jax.device_get(measure(jax.device_put(padded, sharded))))
    psnr.append(p), ssim.append(s), by_scales.append(by_scale)
    if vectors:  # [count, sum, sum of squares] of the token values
      hist[:3] += [np.size(indices), np.sum(indices, dtype=np.float64), np.sum(np.square(indices, dtype=np.float64))]
    else:
      hist += np.bincount(np.asarray(indices).reshape(-1), minlength=k)
    take = max(0, min(2, grid_examples - len(originals)))  # two per batch: a spread over the split
    originals.extend(batch["image"][:take]), recons.extend(x_rec[:take])
    previews.extend(np.stack([q[:take] for q in prefixes] + [x_rec[:take]], axis=1))
  rows = lambda parts, width: np.concatenate(parts) if parts else np.zeros((0, *width), np.float32)
  psnr, ssim = all_processes(rows(psnr, ())), all_processes(rows(ssim, ()))  # a process may have no examples
  if jax.process_count() > 1:
    hist = multihost_utils.process_allgather(hist).sum(0)
  if not len(psnr):
    raise ValueError(f"the eval split {run.config.data.eval!r} of {workdir} is empty")
  result = {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "num_examples": int(len(psnr)),
            "step": int(step), "dataset": run.config.data.eval}
  if vectors:  # the scaled latents should have about unit variance (the latent scale factor's purpose)
    mean = hist[1] / hist[0]
    result.update(token_mean=float(mean), token_std=float(np.sqrt(max(hist[2] / hist[0] - mean * mean, 0.0))),
                  token_dim=layout.token_dim)
  else:
    result.update(codebook_usage=float(np.mean(hist > 0)), perplexity=perplexity(hist), codebook_size=int(k))
  if num_scales:
    result["psnr_by_scales"] = np.mean(all_processes(rows(by_scales, (num_scales,))), axis=0).tolist()
  if jax.process_index() == 0:
    fileio.write_json(fileio.join(workdir, "eval.json"), result)
    grid = images.make_grid(np.stack(originals + recons), num_cols=len(originals))
    images.save_png(grid, fileio.join(workdir, "images", "eval_recon.png"))
    if num_scales:  # one row per image: the original, then decodings from 1 .. K scales
      rows = [np.concatenate([o[None], p]) for o, p in zip(originals, previews)]
      images.save_png(images.make_grid(np.concatenate(rows), num_cols=num_scales + 1),
                      fileio.join(workdir, "images", "eval_scales.png"))
  return result
