"""The group-id attention mask (DESIGN.md) and the block tables that let the kernels skip empty blocks.

Query i sees key j iff `kv_groups[j] <= q_groups[i]` and key j is valid. Invalid keys are folded into the group
ids as HIDDEN (no query sees them) and padded query rows get NOBODY (they see no key), so the kernels need only
the two group arrays. For groups that never decrease along the sequence (every ar-gen family) the blocks a query
block sees form a prefix and the query blocks that see a key block form a suffix, so each kernel loops over one
contiguous range of blocks and skips the rest without computing them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

HIDDEN = jnp.iinfo(jnp.int32).max
NOBODY = jnp.iinfo(jnp.int32).min


def group_mask(q_groups_BL: jax.Array, kv_groups_BS: jax.Array, kv_valid_BS: jax.Array | None = None) -> jax.Array:
  """Boolean mask [B, 1, L, S]: key j visible from query i."""
  mask_BLS = kv_groups_BS[:, None, :] <= q_groups_BL[:, :, None]
  if kv_valid_BS is not None:
    mask_BLS = mask_BLS & kv_valid_BS[:, None, :]
  return mask_BLS[:, None]


def fold_validity(kv_groups_BS: jax.Array, kv_valid_BS: jax.Array | None) -> jax.Array:
  """Key group ids with invalid keys set to HIDDEN."""
  kv_groups_BS = kv_groups_BS.astype(jnp.int32)
  return kv_groups_BS if kv_valid_BS is None else jnp.where(kv_valid_BS, kv_groups_BS, HIDDEN)


def pad_groups(groups_BL: jax.Array, length: int, fill: int) -> jax.Array:
  """Right-pad group ids [B, L] to `length` with `fill`."""
  return jnp.pad(groups_BL.astype(jnp.int32), ((0, 0), (0, length - groups_BL.shape[1])), constant_values=fill)


def block_visibility(q_groups_BL: jax.Array, kv_groups_BS: jax.Array, block_q: int, block_k: int) -> jax.Array:
  """[B, L / block_q, S / block_k] bool: some query of the query block sees some key of the key block."""
  b = q_groups_BL.shape[0]
  q_max_BN = q_groups_BL.reshape(b, -1, block_q).max(-1)
  kv_min_BM = kv_groups_BS.reshape(b, -1, block_k).min(-1)
  return kv_min_BM[:, None, :] <= q_max_BN[:, :, None]


def kv_block_end(visible_BNM: jax.Array) -> jax.Array:
  """[B, N] int32: a query block visits key blocks [0, end); blocks past the last visible one are skipped."""
  num_kv = visible_BNM.shape[-1]
  return jnp.max(jnp.where(visible_BNM, jnp.arange(1, num_kv + 1), 0), axis=-1).astype(jnp.int32)


def q_block_start(visible_BNM: jax.Array) -> jax.Array:
  """[B, M] int32: a key block is visited by query blocks [start, N); earlier query blocks are skipped."""
  num_q = visible_BNM.shape[1]
  return jnp.min(jnp.where(visible_BNM, jnp.arange(num_q)[:, None], num_q), axis=1).astype(jnp.int32)


def skipped_fraction(visible_BNM: jax.Array) -> float:
  """Share of (query block, key block) pairs the forward kernel does not compute."""
  computed = jnp.sum(kv_block_end(visible_BNM))
  return float(1.0 - computed / visible_BNM.size)
