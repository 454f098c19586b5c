"""2-D rotary position embeddings over a token grid (LlamaGen layout).

The head dimension is split in halves: the first half's frequency pairs rotate by the token's row, the second
half's by its column; pairs are interleaved (x[2i], x[2i+1]). Prefix positions (class tokens) get an all-zero
table, as in LlamaGen, which zeroes their queries and keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rope_2d_table(grid_h: int, grid_w: int, head_dim: int, base: float = 10000.0,
                  prefix: int = 1) -> np.ndarray:
  """(cos, sin) table [prefix + grid_h * grid_w, head_dim // 2, 2] in raster order."""
  if head_dim % 4:
    raise ValueError(f"2-D RoPE needs head_dim divisible by 4, got {head_dim=}")
  half = head_dim // 2
  freqs = 1.0 / (base ** (np.arange(0, half, 2)[: half // 2].astype(np.float32) / half))
  rows = np.outer(np.arange(grid_h), freqs)  # [h, half/2]
  cols = np.outer(np.arange(grid_w), freqs)  # [w, half/2]
  angles = np.concatenate([np.broadcast_to(rows[:, None], (grid_h, grid_w, half // 2)),
                           np.broadcast_to(cols[None, :], (grid_h, grid_w, half // 2))], axis=-1)
  table = np.stack([np.cos(angles), np.sin(angles)], axis=-1).reshape(grid_h * grid_w, half, 2)
  return np.concatenate([np.zeros((prefix, half, 2), np.float32), table.astype(np.float32)])


def apply_rope(x_BLHD: jax.Array, table_BLP2: jax.Array) -> jax.Array:
  """Rotates interleaved pairs of x [B, L, H, D] by a table [B, L, D/2, 2] (computed in float32)."""
  x = x_BLHD.astype(jnp.float32).reshape(*x_BLHD.shape[:-1], -1, 2)
  cos, sin = table_BLP2[:, :, None, :, 0], table_BLP2[:, :, None, :, 1]
  out = jnp.stack([x[..., 0] * cos - x[..., 1] * sin, x[..., 1] * cos + x[..., 0] * sin], axis=-1)
  return out.reshape(x_BLHD.shape).astype(x_BLHD.dtype)


def padded_rows(table_NP2: jax.Array, extra: int) -> jax.Array:
  """The table with its last row repeated `extra` times, so a slice of positions that runs past the end (a
  speculative window's spare slots, whose outputs are never kept) is not shifted back by the clamping of
  `dynamic_slice`."""
  if extra <= 0:
    return table_NP2
  return jnp.concatenate([table_NP2, jnp.repeat(table_NP2[-1:], extra, axis=0)], axis=0)
