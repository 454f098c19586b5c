"""Where training numbers go: `DIR/metrics.jsonl` (one JSON object per logged step), TensorBoard under `DIR/tb/`,
and a tqdm progress bar with steps/s and ETA. Only process 0 writes.

`DIR` may be a bucket URL (`gs://...`): objects cannot be appended to, so there `metrics.jsonl` and the
TensorBoard event files are uploaded whole (through `ar_gen.fileio`, the layer every other file of a run goes
through) at most every `BUCKET_UPLOAD_SECONDS`, and metrics.jsonl also at every checkpoint (`sync`) and on close; an event file that passes `EVENT_PART_BYTES` is
closed and the next records go to a new one (TensorBoard reads every events file of a directory), so an upload
costs at most one part, not the whole history. On a local disk lines are appended at once.
"""

from __future__ import annotations

import io
import json
import time

import jax
import numpy as np
import tqdm

from ar_gen import fileio

URL_SCHEMES = ("gs", "s3", "az")
BUCKET_UPLOAD_SECONDS = 60.0
EVENT_PART_BYTES = 16 << 20


class _Throttle:
  """True at most once every BUCKET_UPLOAD_SECONDS (the first call included)."""

  def __init__(self):
    self.last = -float("inf")

  def due(self) -> bool:
    if time.monotonic() - self.last < BUCKET_UPLOAD_SECONDS:
      return False
    self.last = time.monotonic()
    return True


class _BucketEventFile:
  """A TensorBoard event file in a bucket, in parts of at most ~EVENT_PART_BYTES, each uploaded whole."""

  def __init__(self, path: str):
    self.path, self.part, self.buffer, self.throttle = path, 0, io.BytesIO(), _Throttle()

  def _part_path(self) -> str:
    return self.path if self.part == 0 else f"{self.path}.part{self.part}"

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self, force: bool = False) -> None:
    if not (force or self.throttle.due()):
      return
    fileio.write_bytes(self._part_path(), self.buffer.getvalue())
    if self.buffer.tell() > EVENT_PART_BYTES:
      self.part, self.buffer = self.part + 1, io.BytesIO()

  def close(self) -> None:
    self.flush(force=True)


class _BucketEventFiles:
  """tensorboardX's writer factory for bucket URLs, through ar_gen.fileio (not google-cloud-storage)."""

  def open(self, path: str) -> _BucketEventFile:
    return _BucketEventFile(path)

  def directory_check(self, path: str) -> None:
    del path  # buckets need no directories


def _summary_writer(logdir: str):
  from tensorboardX import SummaryWriter, record_writer  # pylint: disable=g-import-not-at-top
  for scheme in URL_SCHEMES:
    record_writer.register_writer_factory(scheme, _BucketEventFiles())
  return SummaryWriter(logdir)


class MetricLogger:
  """Appends metrics to metrics.jsonl and TensorBoard; shows progress."""

  def __init__(self, workdir: str, total_steps: int, initial_step: int = 0, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = fileio.join(workdir, "metrics.jsonl")
    self._writer = None
    self._lines: list[str] = []
    self._upload = _Throttle()
    if self.enabled:
      self._writer = _summary_writer(fileio.join(workdir, "tb"))
      self._truncate_after(initial_step)
    self.bar = tqdm.tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True,
                         disable=not self.enabled, mininterval=1.0)

  def _truncate_after(self, step: int) -> None:
    """Drops lines beyond `step` left by a run that died after its last checkpoint, so a resume logs them once."""
    if not fileio.exists(self.path):
      return
    lines = fileio.read_text(self.path).splitlines(keepends=True)
    self._lines = [l for l in lines if l.strip() and json.loads(l).get("step", 0) <= step]
    fileio.write_text(self.path, "".join(self._lines))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    line = json.dumps({"step": int(step), **{k: float(v) for k, v in metrics.items()}}) + "\n"
    self._lines.append(line)
    if fileio.is_url(self.path):
      if self._upload.due():
        fileio.write_text(self.path, "".join(self._lines))
    else:
      with open(self.path, "a") as f:
        f.write(line)
    for key, value in metrics.items():
      self._writer.add_scalar(key, float(value), int(step))
    self._writer.flush()
    shown = {k: f"{v:.4g}" for k, v in metrics.items() if k in ("loss", "psnr", "codebook_usage", "lr")}
    self.bar.set_postfix(shown, refresh=False)

  def sync(self) -> None:
    """Uploads a bucket's metrics.jsonl now (the trainer calls it after each checkpoint)."""
    if self.enabled and fileio.is_url(self.path):
      fileio.write_text(self.path, "".join(self._lines))

  def write_image(self, step: int, name: str, image_HWC: np.ndarray) -> None:
    if self.enabled:
      self._writer.add_image(name, image_HWC, int(step), dataformats="HWC")

  def advance(self, steps: int = 1) -> None:
    self.bar.update(steps)

  def close(self) -> None:
    self.bar.close()
    self.sync()
    if self._writer is not None:
      self._writer.close()


def read_metrics(workdir: str) -> list[dict]:
  """The records of `workdir/metrics.jsonl`."""
  text = fileio.read_text(fileio.join(workdir, "metrics.jsonl"))
  return [json.loads(line) for line in text.splitlines() if line.strip()]
