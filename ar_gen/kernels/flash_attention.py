"""Group-masked flash attention in Pallas: online-softmax forward, backward, `jax.custom_vjp`; and its reference.

Layout inside the kernels is head-major ([B, H, L, D]) so that one (batch, head) pair is a contiguous [L, D]
tile on TPU and GPU alike. One program of the forward kernel owns a block of `block_q` queries and loops over the
key blocks its block table allows (mask.py), keeping the running max, normaliser and output in registers; an
optional split axis cuts that loop into `num_splits` ranges, which decode_attention.py combines (flash-decoding).
The backward pass is two kernels: dq (loop over key blocks) and dk/dv (loop over query blocks), both recomputing
probabilities from the saved log-sum-exp.

Backends: "gpu" lowers through Triton (block sizes and head dims powers of two, at least 16); "tpu" through
Mosaic, with the block table in scalar-prefetch SMEM. Both run on CPU with `interpret=True`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

from ar_gen.kernels import mask as masks

NEG_INF = -1e30
BACKENDS = ("gpu", "tpu")
_NT = (((1,), (1,)), ((), ()))  # a @ b.T
_TN = (((0,), (0,)), ((), ()))  # a.T @ b


def reference_attention(q_BLHD: jax.Array, k_BSKD: jax.Array, v_BSKD: jax.Array, q_groups_BL: jax.Array,
                        kv_groups_BS: jax.Array, kv_valid_BS: jax.Array | None = None) -> jax.Array:
  """Plain-XLA softmax attention [B, L, H, D] under the group mask; K <= H key/value heads; rows seeing no key -> 0."""
  h, kh = q_BLHD.shape[2], k_BSKD.shape[2]
  if h % kh:
    raise ValueError(f"query heads {h} must be a multiple of key/value heads {kh}")
  if kh != h:
    k_BSKD, v_BSKD = jnp.repeat(k_BSKD, h // kh, axis=2), jnp.repeat(v_BSKD, h // kh, axis=2)
  scale = q_BLHD.shape[-1] ** -0.5
  logits_BHLS = jnp.einsum("blhd,bshd->bhls", q_BLHD, k_BSKD, preferred_element_type=jnp.float32) * scale
  visible_B1LS = masks.group_mask(q_groups_BL, kv_groups_BS, kv_valid_BS)
  logits_BHLS = jnp.where(visible_B1LS, logits_BHLS, NEG_INF)
  p_BHLS = jnp.where(visible_B1LS, jnp.exp(logits_BHLS - logits_BHLS.max(-1, keepdims=True)), 0.0)
  total_BHL1 = p_BHLS.sum(-1, keepdims=True)
  probs_BHLS = p_BHLS / jnp.where(total_BHL1 == 0, 1.0, total_BHL1)
  return jnp.einsum("bhls,bshd->blhd", probs_BHLS.astype(v_BSKD.dtype), v_BSKD)


def _visible(qg_Q1, kg_1K):
  return kg_1K <= qg_Q1


def _forward_kernel(kv_end_ref, q_ref, k_ref, v_ref, qg_ref, kg_ref, o_ref, lse_ref, *, scale, block_k,
                    blocks_per_split):
  b, i, split = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  q_QD, qg_Q1 = q_ref[...], qg_ref[...]
  block_q, head_dim = q_QD.shape
  lo = split * blocks_per_split
  hi = jnp.minimum(lo + blocks_per_split, kv_end_ref[b, i])

  def body(j, carry):
    m_Q1, l_Q1, acc_QD = carry
    start = pl.multiple_of(j * block_k, block_k)
    k_KD, v_KD = k_ref[pl.ds(start, block_k), :], v_ref[pl.ds(start, block_k), :]
    visible_QK = _visible(qg_Q1, kg_ref[:, pl.ds(start, block_k)])
    s_QK = lax.dot_general(q_QD, k_KD, _NT, preferred_element_type=jnp.float32) * scale
    s_QK = jnp.where(visible_QK, s_QK, NEG_INF)
    m_new_Q1 = jnp.maximum(m_Q1, s_QK.max(axis=1, keepdims=True))
    p_QK = jnp.where(visible_QK, jnp.exp(s_QK - m_new_Q1), 0.0)
    alpha_Q1 = jnp.exp(m_Q1 - m_new_Q1)
    l_Q1 = alpha_Q1 * l_Q1 + p_QK.sum(axis=1, keepdims=True)
    acc_QD = alpha_Q1 * acc_QD + jnp.dot(p_QK.astype(v_KD.dtype), v_KD, preferred_element_type=jnp.float32)
    return m_new_Q1, l_Q1, acc_QD

  init = (jnp.full((block_q, 1), NEG_INF, jnp.float32), jnp.zeros((block_q, 1), jnp.float32),
          jnp.zeros((block_q, head_dim), jnp.float32))
  m_Q1, l_Q1, acc_QD = lax.fori_loop(lo, hi, body, init)
  empty_Q1 = l_Q1 == 0.0
  safe_l_Q1 = jnp.where(empty_Q1, 1.0, l_Q1)
  o_ref[...] = (acc_QD / safe_l_Q1).astype(o_ref.dtype)
  lse_ref[...] = jnp.where(empty_Q1, NEG_INF, m_Q1 + jnp.log(safe_l_Q1))


def _dq_kernel(kv_end_ref, q_ref, k_ref, v_ref, qg_ref, kg_ref, do_ref, lse_ref, delta_ref, dq_ref, *, scale,
               block_k):
  b, i = pl.program_id(0), pl.program_id(2)
  q_QD, qg_Q1, do_QD, lse_Q1, delta_Q1 = q_ref[...], qg_ref[...], do_ref[...], lse_ref[...], delta_ref[...]

  def body(j, dq_QD):
    start = pl.multiple_of(j * block_k, block_k)
    k_KD, v_KD = k_ref[pl.ds(start, block_k), :], v_ref[pl.ds(start, block_k), :]
    visible_QK = _visible(qg_Q1, kg_ref[:, pl.ds(start, block_k)])
    s_QK = lax.dot_general(q_QD, k_KD, _NT, preferred_element_type=jnp.float32) * scale
    p_QK = jnp.where(visible_QK, jnp.exp(s_QK - lse_Q1), 0.0)
    dp_QK = lax.dot_general(do_QD, v_KD, _NT, preferred_element_type=jnp.float32)
    ds_QK = p_QK * (dp_QK - delta_Q1)
    return dq_QD + jnp.dot(ds_QK.astype(k_KD.dtype), k_KD, preferred_element_type=jnp.float32)

  dq_QD = lax.fori_loop(0, kv_end_ref[b, i], body, jnp.zeros(q_QD.shape, jnp.float32))
  dq_ref[...] = (dq_QD * scale).astype(dq_ref.dtype)


def _dkv_kernel(q_start_ref, q_ref, k_ref, v_ref, qg_ref, kg_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, *,
                scale, block_q, num_q_blocks):
  b, j = pl.program_id(0), pl.program_id(2)
  k_KD, v_KD, kg_1K = k_ref[...], v_ref[...], kg_ref[...]

  def body(i, carry):
    dk_KD, dv_KD = carry
    start = pl.multiple_of(i * block_q, block_q)
    rows = pl.ds(start, block_q)
    q_QD, do_QD = q_ref[rows, :], do_ref[rows, :]
    lse_Q1, delta_Q1 = lse_ref[rows, :], delta_ref[rows, :]
    visible_QK = _visible(qg_ref[rows, :], kg_1K)
    s_QK = lax.dot_general(q_QD, k_KD, _NT, preferred_element_type=jnp.float32) * scale
    p_QK = jnp.where(visible_QK, jnp.exp(s_QK - lse_Q1), 0.0)
    dv_KD = dv_KD + lax.dot_general(p_QK.astype(do_QD.dtype), do_QD, _TN, preferred_element_type=jnp.float32)
    dp_QK = lax.dot_general(do_QD, v_KD, _NT, preferred_element_type=jnp.float32)
    ds_QK = p_QK * (dp_QK - delta_Q1)
    dk_KD = dk_KD + lax.dot_general(ds_QK.astype(q_QD.dtype), q_QD, _TN, preferred_element_type=jnp.float32)
    return dk_KD, dv_KD

  zeros_KD = jnp.zeros(k_KD.shape, jnp.float32)
  dk_KD, dv_KD = lax.fori_loop(q_start_ref[b, j], num_q_blocks, body, (zeros_KD, zeros_KD))
  dk_ref[...] = (dk_KD * scale).astype(dk_ref.dtype)
  dv_ref[...] = dv_KD.astype(dv_ref.dtype)


def _pallas(kernel, *, backend: str, interpret: bool, grid, table, in_specs, out_specs, out_shape, head_dim):
  """pallas_call with the int32 block table read as scalars: SMEM scalar prefetch on TPU, a global ref on GPU."""
  if backend == "tpu":
    grid_spec = pltpu.PrefetchScalarGridSpec(num_scalar_prefetch=1, grid=grid, in_specs=in_specs,
                                             out_specs=out_specs)
    params = pltpu.CompilerParams(dimension_semantics=("parallel",) * len(grid))
    call = pl.pallas_call(kernel, out_shape=out_shape, grid_spec=grid_spec, compiler_params=params,
                          interpret=interpret)
  else:
    table_spec = pl.BlockSpec(table.shape, lambda *_: (0,) * table.ndim)
    params = None if interpret else plgpu.CompilerParams(num_warps=4 if head_dim <= 64 else 8, num_stages=2)
    call = pl.pallas_call(kernel, out_shape=out_shape, grid=grid, in_specs=[table_spec, *in_specs],
                          out_specs=out_specs, compiler_params=params, interpret=interpret)
  return lambda *args: call(table, *args)


def forward(q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, kv_end_BN, *, block_q: int, block_k: int, num_splits: int = 1,
            backend: str = "gpu", interpret: bool = False):
  """Forward kernel on padded inputs -> (out [B, H, splits, L, D], lse [B, H, splits, L, 1] float32)."""
  b, h, length, d = q_BHLD.shape
  kv_heads, kv_len = k_BKSD.shape[1], k_BKSD.shape[2]
  rep, num_kv_blocks = h // kv_heads, kv_len // block_k
  blocks_per_split = -(-num_kv_blocks // num_splits)
  kernel = functools.partial(_forward_kernel, scale=d ** -0.5, block_k=block_k, blocks_per_split=blocks_per_split)
  in_specs = [
      pl.BlockSpec((None, None, block_q, d), lambda b_, h_, i, s, *_: (b_, h_, i, 0)),
      pl.BlockSpec((None, None, kv_len, d), lambda b_, h_, i, s, *_: (b_, lax.div(h_, rep), 0, 0)),
      pl.BlockSpec((None, None, kv_len, d), lambda b_, h_, i, s, *_: (b_, lax.div(h_, rep), 0, 0)),
      pl.BlockSpec((None, block_q, 1), lambda b_, h_, i, s, *_: (b_, i, 0)),
      pl.BlockSpec((None, 1, kv_len), lambda b_, h_, i, s, *_: (b_, 0, 0)),
  ]
  out_specs = [
      pl.BlockSpec((None, None, None, block_q, d), lambda b_, h_, i, s, *_: (b_, h_, s, i, 0)),
      pl.BlockSpec((None, None, None, block_q, 1), lambda b_, h_, i, s, *_: (b_, h_, s, i, 0)),
  ]
  out_shape = [jax.ShapeDtypeStruct((b, h, num_splits, length, d), q_BHLD.dtype),
               jax.ShapeDtypeStruct((b, h, num_splits, length, 1), jnp.float32)]
  call = _pallas(kernel, backend=backend, interpret=interpret, grid=(b, h, length // block_q, num_splits),
                 table=kv_end_BN, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape, head_dim=d)
  return call(q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S)


def _backward(q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, kv_end_BN, q_start_BM, o_BHLD, lse_BHL1, do_BHLD, *,
              block_q, block_k, backend, interpret):
  b, h, length, d = q_BHLD.shape
  kv_heads, kv_len = k_BKSD.shape[1], k_BKSD.shape[2]
  rep, scale = h // kv_heads, d ** -0.5
  delta_BHL1 = jnp.sum(o_BHLD.astype(jnp.float32) * do_BHLD.astype(jnp.float32), axis=-1, keepdims=True)
  full_kv = pl.BlockSpec((None, None, kv_len, d), lambda b_, h_, i, *_: (b_, lax.div(h_, rep), 0, 0))
  q_block = pl.BlockSpec((None, None, block_q, d), lambda b_, h_, i, *_: (b_, h_, i, 0))
  row_block = pl.BlockSpec((None, None, block_q, 1), lambda b_, h_, i, *_: (b_, h_, i, 0))
  dq = _pallas(functools.partial(_dq_kernel, scale=scale, block_k=block_k), backend=backend, interpret=interpret,
               grid=(b, h, length // block_q), table=kv_end_BN,
               in_specs=[q_block, full_kv, full_kv, pl.BlockSpec((None, block_q, 1), lambda b_, h_, i, *_: (b_, i, 0)),
                         pl.BlockSpec((None, 1, kv_len), lambda b_, h_, i, *_: (b_, 0, 0)), q_block, row_block,
                         row_block],
               out_specs=q_block, out_shape=jax.ShapeDtypeStruct(q_BHLD.shape, q_BHLD.dtype), head_dim=d)(
                   q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, do_BHLD, lse_BHL1, delta_BHL1)

  full_q = pl.BlockSpec((None, None, length, d), lambda b_, h_, j, *_: (b_, h_, 0, 0))
  full_rows = pl.BlockSpec((None, None, length, 1), lambda b_, h_, j, *_: (b_, h_, 0, 0))
  kv_block = pl.BlockSpec((None, None, block_k, d), lambda b_, h_, j, *_: (b_, lax.div(h_, rep), j, 0))
  dkv_block = pl.BlockSpec((None, None, block_k, d), lambda b_, h_, j, *_: (b_, h_, j, 0))
  dkv_shape = jax.ShapeDtypeStruct((b, h, kv_len, d), jnp.float32)
  dk_BHSD, dv_BHSD = _pallas(
      functools.partial(_dkv_kernel, scale=scale, block_q=block_q, num_q_blocks=length // block_q),
      backend=backend, interpret=interpret, grid=(b, h, kv_len // block_k), table=q_start_BM,
      in_specs=[full_q, kv_block, kv_block, pl.BlockSpec((None, length, 1), lambda b_, h_, j, *_: (b_, 0, 0)),
                pl.BlockSpec((None, 1, block_k), lambda b_, h_, j, *_: (b_, 0, j)), full_q, full_rows, full_rows],
      out_specs=[dkv_block, dkv_block], out_shape=[dkv_shape, dkv_shape], head_dim=d)(
          q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, do_BHLD, lse_BHL1, delta_BHL1)
  dk_BKSD = dk_BHSD.reshape(b, kv_heads, rep, kv_len, d).sum(2).astype(k_BKSD.dtype)
  dv_BKSD = dv_BHSD.reshape(b, kv_heads, rep, kv_len, d).sum(2).astype(v_BKSD.dtype)
  return dq, dk_BKSD, dv_BKSD


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10))
def _flash(q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, kv_end_BN, q_start_BM, block_q, block_k, backend, interpret):
  out, _ = forward(q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, kv_end_BN, block_q=block_q, block_k=block_k,
                   backend=backend, interpret=interpret)
  return out[:, :, 0]


def _flash_fwd(q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, kv_end_BN, q_start_BM, block_q, block_k, backend, interpret):
  out, lse = forward(q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, kv_end_BN, block_q=block_q, block_k=block_k,
                     backend=backend, interpret=interpret)
  out_BHLD, lse_BHL1 = out[:, :, 0], lse[:, :, 0]
  return out_BHLD, (q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, kv_end_BN, q_start_BM, out_BHLD, lse_BHL1)


def _flash_bwd(block_q, block_k, backend, interpret, residuals, do_BHLD):
  q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, kv_end_BN, q_start_BM, out_BHLD, lse_BHL1 = residuals
  dq, dk, dv = _backward(q_BHLD, k_BKSD, v_BKSD, qg_BL1, kg_B1S, kv_end_BN, q_start_BM, out_BHLD, lse_BHL1, do_BHLD,
                         block_q=block_q, block_k=block_k, backend=backend, interpret=interpret)
  return dq, dk, dv, None, None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def fit_block(block: int, length: int) -> int:
  """The block size used for a sequence of `length`: `block`, or the next power of two >= length (min 16)."""
  return min(block, max(16, 1 << max(length - 1, 1).bit_length()))


def round_up(length: int, block: int) -> int:
  return -(-length // block) * block


def flash_attention(q_BLHD: jax.Array, k_BSKD: jax.Array, v_BSKD: jax.Array, q_groups_BL: jax.Array,
                    kv_groups_BS: jax.Array, kv_valid_BS: jax.Array | None = None, *, block_q: int = 128,
                    block_k: int = 128, backend: str = "gpu", interpret: bool = False) -> jax.Array:
  """Flash attention [B, L, H, D] under the group mask, differentiable in q, k, v; any L and S (padded inside)."""
  if backend not in BACKENDS:
    raise ValueError(f"flash attention backend={backend!r} is not one of {BACKENDS}")
  b, length, h, d = q_BLHD.shape
  kv_len, kv_heads = k_BSKD.shape[1], k_BSKD.shape[2]
  if h % kv_heads:
    raise ValueError(f"query heads {h} must be a multiple of key/value heads {kv_heads}")
  block_q, block_k = fit_block(block_q, length), fit_block(block_k, kv_len)
  lp, sp = round_up(length, block_q), round_up(kv_len, block_k)
  qg_BL = masks.pad_groups(q_groups_BL, lp, masks.NOBODY)
  kg_BS = masks.pad_groups(masks.fold_validity(kv_groups_BS, kv_valid_BS), sp, masks.HIDDEN)
  visible_BNM = masks.block_visibility(qg_BL, kg_BS, block_q, block_k)
  pad = lambda x, n: jnp.pad(x, ((0, 0), (0, 0), (0, n - x.shape[2]), (0, 0)))
  out_BHLD = _flash(pad(q_BLHD.transpose(0, 2, 1, 3), lp), pad(k_BSKD.transpose(0, 2, 1, 3), sp),
                    pad(v_BSKD.transpose(0, 2, 1, 3), sp), qg_BL[:, :, None], kg_BS[:, None, :],
                    masks.kv_block_end(visible_BNM), masks.q_block_start(visible_BNM), block_q, block_k, backend,
                    interpret)
  return out_BHLD[:, :, :length].transpose(0, 2, 1, 3)
