"""The one attention entry point of model code: `attention()` for a sequence, `cached_attention()` for decoding.

`impl` is one of IMPLS: "auto" picks the Pallas kernels on TPU and GPU and XLA elsewhere; "pallas" forces the
kernels (in interpret mode on CPU, for tests); "xla" is the reference; "cudnn" is
`jax.nn.dot_product_attention(implementation="cudnn")` with an explicit mask (GPU only).
"""

from __future__ import annotations

import dataclasses

import jax

from ar_gen.kernels import mask as masks
from ar_gen.kernels.decode_attention import decode_attention
from ar_gen.kernels.flash_attention import flash_attention, reference_attention

IMPLS = ("auto", "pallas", "xla", "cudnn")
GPU_PLATFORMS = ("gpu", "cuda", "rocm")


@dataclasses.dataclass(frozen=True)
class PallasTarget:
  """How the Pallas kernels run on the default backend."""
  backend: str
  interpret: bool


def pallas_target(platform: str | None = None) -> PallasTarget:
  """Mosaic on TPU, Triton on GPU; elsewhere the TPU-style kernels in interpret mode."""
  platform = platform or jax.default_backend()
  if platform == "tpu":
    return PallasTarget("tpu", False)
  if platform in GPU_PLATFORMS:
    return PallasTarget("gpu", False)
  return PallasTarget("tpu", True)


def resolve(impl: str, platform: str | None = None) -> str:
  """The concrete implementation `impl` stands for on `platform` (default: jax's default backend)."""
  if impl not in IMPLS:
    raise ValueError(f"attention impl={impl!r} is not one of {IMPLS}")
  if impl != "auto":
    return impl
  return "pallas" if (platform or jax.default_backend()) in ("tpu", *GPU_PLATFORMS) else "xla"


def _cudnn(q_BLHD, k_BSKD, v_BSKD, q_groups_BL, kv_groups_BS, kv_valid_BS):
  mask_B1LS = masks.group_mask(q_groups_BL, kv_groups_BS, kv_valid_BS)
  return jax.nn.dot_product_attention(q_BLHD, k_BSKD, v_BSKD, mask=mask_B1LS, implementation="cudnn")


def attention(q_BLHD: jax.Array, k_BSKD: jax.Array, v_BSKD: jax.Array, q_groups_BL: jax.Array,
              kv_groups_BS: jax.Array, kv_valid_BS: jax.Array | None = None, impl: str = "auto", *,
              block_q: int = 128, block_k: int = 128) -> jax.Array:
  """Softmax attention [B, L, H, D] under the group mask, K <= H key/value heads, differentiable."""
  impl = resolve(impl)
  if impl == "pallas":
    target = pallas_target()
    return flash_attention(q_BLHD, k_BSKD, v_BSKD, q_groups_BL, kv_groups_BS, kv_valid_BS, block_q=block_q,
                           block_k=block_k, backend=target.backend, interpret=target.interpret)
  if impl == "cudnn":
    return _cudnn(q_BLHD, k_BSKD, v_BSKD, q_groups_BL, kv_groups_BS, kv_valid_BS)
  return reference_attention(q_BLHD, k_BSKD, v_BSKD, q_groups_BL, kv_groups_BS, kv_valid_BS)


def cached_attention(q_BLHD: jax.Array, k_BKSD: jax.Array, v_BKSD: jax.Array, q_groups_BL: jax.Array,
                     kv_groups_BS: jax.Array, kv_valid_BS: jax.Array | None = None, impl: str = "auto", *,
                     block_k: int = 128) -> jax.Array:
  """Attention [B, L, H, D] of a few new queries over a head-major KV cache [B, K, S, D]."""
  impl = resolve(impl)
  if impl == "pallas":
    target = pallas_target()
    return decode_attention(q_BLHD, k_BKSD, v_BKSD, q_groups_BL, kv_groups_BS, kv_valid_BS, block_k=block_k,
                            backend=target.backend, interpret=target.interpret)
  k_BSKD, v_BSKD = k_BKSD.transpose(0, 2, 1, 3), v_BKSD.transpose(0, 2, 1, 3)
  if impl == "cudnn":
    return _cudnn(q_BLHD, k_BSKD, v_BSKD, q_groups_BL, kv_groups_BS, kv_valid_BS)
  return reference_attention(q_BLHD, k_BSKD, v_BSKD, q_groups_BL, kv_groups_BS, kv_valid_BS)
