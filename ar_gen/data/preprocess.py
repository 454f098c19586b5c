"""Image preprocessing ops: decode, resize (shorter side + center crop, or fit + pad), flip, channels, range.

Each op is a small pure function on numpy arrays, tested on its own; `preprocess` chains them as the data config
says. Output images are float32 [H, W, C] in [-1, 1].
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

RESIZE_MODES = ("crop", "pad")


def decode(image: Any) -> np.ndarray:
  """Returns uint8 [H, W, C] from a decoded array or encoded image bytes."""
  if isinstance(image, (bytes, bytearray)):
    with Image.open(io.BytesIO(image)) as im:
      image = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[:, :, None]
  if image.ndim != 3 or image.dtype != np.uint8:
    raise ValueError(f"expected a uint8 image [H, W, C], got {image.dtype} {image.shape}")
  return image


def _resize(image_HWC: np.ndarray, height: int, width: int) -> np.ndarray:
  if image_HWC.shape[:2] == (height, width):
    return image_HWC
  mode = "L" if image_HWC.shape[2] == 1 else "RGB"
  im = Image.fromarray(image_HWC[:, :, 0] if mode == "L" else image_HWC, mode)
  out = np.asarray(im.resize((width, height), Image.BICUBIC, reducing_gap=None))
  return out.reshape(height, width, image_HWC.shape[2])


def resize_crop(image_HWC: np.ndarray, size: int) -> np.ndarray:
  """Resizes the shorter side to `size` and center-crops to [size, size]."""
  h, w = image_HWC.shape[:2]
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  image_HWC = _resize(image_HWC, nh, nw)
  top, left = (nh - size) // 2, (nw - size) // 2
  return image_HWC[top:top + size, left:left + size]


def resize_pad(image_HWC: np.ndarray, size: int) -> np.ndarray:
  """Shrinks the longer side to `size` if larger, then zero-pads (black) to [size, size], centered."""
  h, w = image_HWC.shape[:2]
  if max(h, w) > size:
    scale = size / max(h, w)
    h, w = max(1, round(h * scale)), max(1, round(w * scale))
    image_HWC = _resize(image_HWC, h, w)
  out = np.zeros((size, size, image_HWC.shape[2]), np.uint8)
  top, left = (size - h) // 2, (size - w) // 2
  out[top:top + h, left:left + w] = image_HWC
  return out


def to_channels(image_HWC: np.ndarray, channels: int) -> np.ndarray:
  """Converts to 1 (ITU-R 601 luma) or 3 channels."""
  c = image_HWC.shape[2]
  if c == channels:
    return image_HWC
  if c == 4:
    return to_channels(image_HWC[:, :, :3], channels)
  if channels == 3 and c == 1:
    return np.repeat(image_HWC, 3, axis=2)
  if channels == 1 and c == 3:
    luma = image_HWC.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)[:, :, None]
  raise ValueError(f"cannot convert an image with {c} channels to {channels}")


def to_float(image_HWC: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [-1, 1]."""
  return image_HWC.astype(np.float32) / 127.5 - 1.0


def to_uint8(image: np.ndarray) -> np.ndarray:
  """float [-1, 1] -> uint8 [0, 255], rounding and clipping."""
  return np.clip(np.round((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def preprocess(record: dict[str, Any], *, image_size: int, channels: int, resize: str = "crop",
               flip: bool = False, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
  """Decodes and prepares one record {image, label} -> {image: float32 [S, S, C] in [-1, 1], label: int32}."""
  if resize not in RESIZE_MODES:
    raise ValueError(f"data.resize must be one of {RESIZE_MODES}, got {resize!r}")
  image = decode(record["image"])
  image = resize_crop(image, image_size) if resize == "crop" else resize_pad(image, image_size)
  image = to_channels(image, channels)
  if flip and rng is not None and rng.random() < 0.5:
    image = image[:, ::-1]
  return {"image": to_float(image), "label": np.int32(record.get("label", 0))}
