"""Where training numbers go: `DIR/metrics.jsonl` (one JSON object per logged step), TensorBoard under `DIR/tb/`,
and a tqdm progress bar with steps/s and ETA. Only process 0 writes.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import tqdm


class MetricLogger:
  """Appends metrics to metrics.jsonl and TensorBoard; shows progress."""

  def __init__(self, workdir: str, total_steps: int, initial_step: int = 0, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._writer = None
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(os.path.join(workdir, "tb"))
      self._truncate_after(initial_step)
    self.bar = tqdm.tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True,
                         disable=not self.enabled, mininterval=1.0)

  def _truncate_after(self, step: int) -> None:
    """Drops lines beyond `step` left by a run that died after its last checkpoint, so a resume logs them once."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [l for l in f if l.strip() and json.loads(l).get("step", 0) <= step]
    with open(self.path, "w") as f:
      f.writelines(lines)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in metrics.items():
      self._writer.add_scalar(key, float(value), int(step))
    self._writer.flush()
    shown = {k: f"{v:.4g}" for k, v in metrics.items() if k in ("loss", "psnr", "codebook_usage", "lr")}
    self.bar.set_postfix(shown, refresh=False)

  def write_image(self, step: int, name: str, image_HWC: np.ndarray) -> None:
    if self.enabled:
      self._writer.add_image(name, image_HWC, int(step), dataformats="HWC")

  def advance(self, steps: int = 1) -> None:
    self.bar.update(steps)

  def close(self) -> None:
    self.bar.close()
    if self._writer is not None:
      self._writer.close()


def read_metrics(workdir: str) -> list[dict]:
  """The records of `workdir/metrics.jsonl`."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]
