"""Image grids and PNG files: what people look at (sample and reconstruction grids)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ar_gen import fileio
from ar_gen.data.preprocess import to_uint8


def make_grid(images_NHWC: np.ndarray, num_cols: int, pad: int = 2, pad_value: int = 255,
              min_tile: int = 64) -> np.ndarray:
  """Tiles uint8 (or [-1, 1] float) images [N, H, W, C] into one uint8 image, `num_cols` per row.

  Images smaller than `min_tile` pixels are enlarged by an integer factor (nearest neighbour) to be seen.
  """
  images = np.asarray(images_NHWC)
  if images.dtype != np.uint8:
    images = to_uint8(images)
  factor = max(1, min_tile // max(images.shape[1:3]))
  images = images.repeat(factor, axis=1).repeat(factor, axis=2)
  n, h, w, c = images.shape
  num_rows = -(-n // num_cols)
  grid = np.full((num_rows * (h + pad) + pad, num_cols * (w + pad) + pad, c), pad_value, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, num_cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = image
  return grid


def save_png(image_HWC: np.ndarray, path: str) -> str:
  """Writes a uint8 [H, W, 1 or 3] image atomically; returns the path."""
  image = np.asarray(image_HWC)
  pil = Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image)
  buffer = io.BytesIO()
  pil.save(buffer, format="PNG")
  return fileio.write_bytes(path, buffer.getvalue())
