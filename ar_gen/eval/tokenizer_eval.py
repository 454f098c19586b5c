"""`ar-gen eval-tokenizer`: PSNR, SSIM, codebook usage and perplexity of a trained tokenizer on held-out data.

Uses the EMA weights when the run kept them. Writes `DIR/eval.json` and `DIR/images/eval_recon.png` (originals
over reconstructions). Usage is the fraction of the K codes used at least once over the whole held-out split.
For a progressive layout (several token maps: multi-scale, frequency bands) `psnr_by_scales[k]` is the PSNR of
decoding from the first k + 1 maps only (the progressive preview; the last entry is `psnr`), and
`DIR/images/eval_scales.png` shows the originals over the decodings from 1, 2, ..., K maps.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from ar_gen import images
from ar_gen.data import pipeline
from ar_gen.runs.run import restore_run
from tokenizers import losses
from tokenizers.task import perplexity
from tokenizers.vq import code_histogram


def evaluate(workdir: str, max_examples: int | None = None, batch_size: int = 100,
             grid_examples: int = 10) -> dict:
  """Evaluates the tokenizer of `workdir` on its config's `data.eval`; returns and writes the numbers."""
  run, state, step = restore_run(workdir)
  tokenizer = run.task.export(run.model(state))
  k = tokenizer.codebook_size
  layout = tokenizer.layout
  num_scales = len(layout.maps) if layout.progressive else 0

  @jax.jit
  def measure(x):
    indices = tokenizer.encode(x)
    x_rec = tokenizer.decode(indices)
    prefixes = [tokenizer.decode(indices, n) for n in range(1, num_scales)]
    by_scale = jnp.stack([losses.psnr(p, x) for p in prefixes + [x_rec]], axis=1) if num_scales else None
    return losses.psnr(x_rec, x), losses.ssim(x_rec, x), code_histogram(indices, k), x_rec, by_scale, prefixes

  psnr, ssim, hist, originals, recons, by_scales, previews = [], [], np.zeros(k, np.float64), [], [], [], []
  batches = pipeline.eval_batches(run.config.data, batch_size, max_examples=max_examples)
  for batch in tqdm.tqdm(batches, desc="eval-tokenizer", unit="batch", disable=jax.process_index() != 0):
    p, s, h, x_rec, by_scale, prefixes = jax.device_get(measure(jnp.asarray(batch["image"])))
    psnr.append(p), ssim.append(s), by_scales.append(by_scale)
    hist += h
    take = max(0, min(2, grid_examples - len(originals)))  # two per batch: a spread over the split
    originals.extend(batch["image"][:take]), recons.extend(x_rec[:take])
    previews.extend(np.stack([q[:take] for q in prefixes] + [x_rec[:take]], axis=1))
  if not psnr:
    raise ValueError(f"the eval split {run.config.data.eval!r} of {workdir} is empty")
  psnr, ssim = np.concatenate(psnr), np.concatenate(ssim)
  result = {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "codebook_usage": float(np.mean(hist > 0)),
            "perplexity": perplexity(hist), "codebook_size": int(k), "num_examples": int(len(psnr)),
            "step": int(step), "dataset": run.config.data.eval}
  if num_scales:
    result["psnr_by_scales"] = np.mean(np.concatenate(by_scales), axis=0).tolist()
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(result, f, indent=2)
    grid = images.make_grid(np.stack(originals + recons), num_cols=len(originals))
    images.save_png(grid, os.path.join(workdir, "images", "eval_recon.png"))
    if num_scales:  # one row per image: the original, then decodings from 1 .. K scales
      rows = [np.concatenate([o[None], p]) for o, p in zip(originals, previews)]
      images.save_png(images.make_grid(np.concatenate(rows), num_cols=num_scales + 1),
                      os.path.join(workdir, "images", "eval_scales.png"))
  return result
