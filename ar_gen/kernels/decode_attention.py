"""Decode attention: a few query tokens (one token, or one whole scale) against a long KV cache (flash-decoding).

The cache is head-major ([B, K, S, D], the layout the transformer keeps it in), so a decode step reads it without a
transpose. The forward kernel of flash_attention.py runs with its split axis: `num_splits` programs per (batch,
head, query block) each reduce one range of key blocks to a partial output and log-sum-exp, and the partials are
combined here. Key blocks past the valid length (or otherwise hidden by the group mask) are not computed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ar_gen.kernels import flash_attention as fa
from ar_gen.kernels import mask as masks


def default_splits(batch: int, heads: int, num_kv_blocks: int, target_programs: int = 256) -> int:
  """Enough splits to give the accelerator about `target_programs` programs, at most one per key block."""
  return max(1, min(num_kv_blocks, target_programs // max(batch * heads, 1)))


def combine_splits(out_BHNLD: jax.Array, lse_BHNL1: jax.Array) -> jax.Array:
  """Merge per-split normalised outputs by their log-sum-exp weights -> [B, H, L, D] float32."""
  weight_BHNL1 = jnp.exp(lse_BHNL1 - lse_BHNL1.max(axis=2, keepdims=True))
  total_BHL1 = weight_BHNL1.sum(axis=2)
  return (weight_BHNL1 * out_BHNLD.astype(jnp.float32)).sum(axis=2) / total_BHL1


def decode_attention(q_BLHD: jax.Array, k_BKSD: jax.Array, v_BKSD: jax.Array, q_groups_BL: jax.Array,
                     kv_groups_BS: jax.Array, kv_valid_BS: jax.Array | None = None, *, block_k: int = 128,
                     num_splits: int | None = None, backend: str = "gpu", interpret: bool = False) -> jax.Array:
  """Attention [B, L, H, D] of L new queries over a head-major cache [B, K, S, D]; any S (padded if needed)."""
  b, length, h, d = q_BLHD.shape
  kv_heads, kv_len = k_BKSD.shape[1], k_BKSD.shape[2]
  if h % kv_heads:
    raise ValueError(f"query heads {h} must be a multiple of key/value heads {kv_heads}")
  block_q, block_k = fa.fit_block(128, length), fa.fit_block(block_k, kv_len)
  lp, sp = fa.round_up(length, block_q), fa.round_up(kv_len, block_k)
  if sp != kv_len:
    pad = ((0, 0), (0, 0), (0, sp - kv_len), (0, 0))
    k_BKSD, v_BKSD = jnp.pad(k_BKSD, pad), jnp.pad(v_BKSD, pad)
  qg_BL = masks.pad_groups(q_groups_BL, lp, masks.NOBODY)
  kg_BS = masks.pad_groups(masks.fold_validity(kv_groups_BS, kv_valid_BS), sp, masks.HIDDEN)
  num_kv_blocks = sp // block_k
  splits = num_splits or default_splits(b, h, num_kv_blocks)
  q_BHLD = jnp.pad(q_BLHD.transpose(0, 2, 1, 3), ((0, 0), (0, 0), (0, lp - length), (0, 0)))
  kv_end_BN = masks.kv_block_end(masks.block_visibility(qg_BL, kg_BS, block_q, block_k))
  out_BHNLD, lse_BHNL1 = fa.forward(q_BHLD, k_BKSD, v_BKSD, qg_BL[:, :, None], kg_BS[:, None, :], kv_end_BN,
                                    block_q=block_q, block_k=block_k, num_splits=splits, backend=backend,
                                    interpret=interpret)
  out_BHLD = combine_splits(out_BHNLD, lse_BHNL1)[:, :, :length]
  return out_BHLD.transpose(0, 2, 1, 3).astype(q_BLHD.dtype)
