"""The one attention entry point of ar-gen, over DESIGN.md's group-id mask.

Query i may attend to key j iff `kv_groups[j] <= q_groups[i]` and key j is valid. Causal attention is
group = position; VAR's block-causal attention is group = scale. `impl='xla'` is the plain XLA implementation;
the Pallas kernels (TPU / GPU) plug in behind the same signature.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLS = ("xla",)


def group_mask(q_groups_BL: jax.Array, kv_groups_BS: jax.Array, kv_valid_BS: jax.Array | None = None) -> jax.Array:
  """Boolean mask [B, 1, L, S]: key j visible from query i."""
  mask_BLS = kv_groups_BS[:, None, :] <= q_groups_BL[:, :, None]
  if kv_valid_BS is not None:
    mask_BLS = mask_BLS & kv_valid_BS[:, None, :]
  return mask_BLS[:, None]


def attention(q_BLHD: jax.Array, k_BSKD: jax.Array, v_BSKD: jax.Array, q_groups_BL: jax.Array,
              kv_groups_BS: jax.Array, kv_valid_BS: jax.Array | None = None, impl: str = "xla") -> jax.Array:
  """Softmax attention [B, L, H, D] with K <= H key/value heads (grouped-query attention)."""
  if impl not in IMPLS:
    raise ValueError(f"attention impl={impl!r} is not one of {IMPLS}")
  h, kh = q_BLHD.shape[2], k_BSKD.shape[2]
  if h % kh:
    raise ValueError(f"query heads {h} must be a multiple of key/value heads {kh}")
  if kh != h:
    k_BSKD, v_BSKD = jnp.repeat(k_BSKD, h // kh, axis=2), jnp.repeat(v_BSKD, h // kh, axis=2)
  scale = q_BLHD.shape[-1] ** -0.5
  logits_BHLS = jnp.einsum("blhd,bshd->bhls", q_BLHD, k_BSKD, preferred_element_type=jnp.float32) * scale
  logits_BHLS = jnp.where(group_mask(q_groups_BL, kv_groups_BS, kv_valid_BS), logits_BHLS, -1e30)
  probs_BHLS = jax.nn.softmax(logits_BHLS, axis=-1)
  return jnp.einsum("bhls,bshd->blhd", probs_BHLS.astype(v_BSKD.dtype), v_BSKD)
