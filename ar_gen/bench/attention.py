"""`ar-gen bench attention`: milliseconds and TFLOP/s of the attention implementations, and a kernel check.

For each (B, H, L, D) and each layout (causal; block-causal: VAR's scales 1..16 when L = 680, else groups of 64
tokens) it times the forward pass and forward+backward of every implementation available on this backend
(Pallas and XLA on TPU; Pallas, XLA and cuDNN on GPU; XLA on CPU, or what `--impls` asks for), and decode
attention (one new token against caches of several lengths). FLOPs count only the visible (query, key) pairs:
4 * D per pair forward, 3.5x that for forward+backward, so a kernel that skips empty blocks is not credited for
them. Each row also gives the share of blocks the kernel skips. Before timing, the kernel runs in interpret mode
at small sizes (or natively on TPU/GPU) and its largest relative error against the reference is printed.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from ar_gen import table
from ar_gen.bench import timing
from ar_gen.kernels import dispatch
from ar_gen.kernels import mask as masks
from ar_gen.kernels.flash_attention import fit_block, reference_attention, round_up

SHAPES = ((8, 16, 680, 64), (8, 16, 1024, 64), (4, 16, 4096, 128))
DECODE_LENGTHS = (256, 680, 4096)
DECODE_SHAPE = (8, 16, 64)  # B, H, D
VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def layout_groups(layout: str, length: int) -> np.ndarray:
  """Group ids [L] of a benchmark layout."""
  if layout == "causal":
    return np.arange(length, dtype=np.int32)
  if layout != "block-causal":
    raise ValueError(f"layout must be causal or block-causal, got {layout!r}")
  if length == sum(s * s for s in VAR_SCALES):
    return np.concatenate([np.full(s * s, k, np.int32) for k, s in enumerate(VAR_SCALES)])
  return np.arange(length, dtype=np.int32) // 64


def skipped_share(groups_L: np.ndarray, block_q: int, block_k: int) -> float:
  """Share of block pairs the flash kernel skips for this layout."""
  length = groups_L.shape[0]
  bq, bk = fit_block(block_q, length), fit_block(block_k, length)
  g_1L = jnp.asarray(groups_L)[None]
  qg = masks.pad_groups(g_1L, round_up(length, bq), masks.NOBODY)
  kg = masks.pad_groups(g_1L, round_up(length, bk), masks.HIDDEN)
  return masks.skipped_fraction(masks.block_visibility(qg, kg, bq, bk))


def default_impls() -> tuple[str, ...]:
  platform = jax.default_backend()
  return {"gpu": ("pallas", "xla", "cudnn"), "tpu": ("pallas", "xla")}.get(platform, ("xla",))


def check_kernel(block_q: int, block_k: int) -> dict:
  """Largest relative error of the Pallas kernel (forward, gradients, decode) against the reference."""
  errors = {}
  for layout, length in (("causal", 200), ("block-causal", 680)):
    g_BL = jnp.asarray(layout_groups(layout, length))[None]
    q, k, v = (jax.random.normal(key, (1, length, 2, 64)) for key in jax.random.split(jax.random.key(0), 3))
    w_D = jnp.sin(jnp.arange(64.0))

    def loss(impl):
      return lambda q, k, v: jnp.sum(dispatch.attention(q, k, v, g_BL, g_BL, impl=impl, block_q=block_q,
                                                        block_k=block_k) * w_D)

    got = jax.value_and_grad(loss("pallas"), argnums=(0, 1, 2))(q, k, v)
    want = jax.value_and_grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
    out = dispatch.attention(q, k, v, g_BL, g_BL, impl="pallas", block_q=block_q, block_k=block_k)
    ref = reference_attention(q, k, v, g_BL, g_BL)
    errors[f"{layout} L={length}"] = max(
        _rel_err(out, ref), *(_rel_err(a, b) for a, b in zip(got[1], want[1])))
  k_BKSD = jax.random.normal(jax.random.key(1), (1, 2, 300, 64))
  q = jax.random.normal(jax.random.key(2), (1, 1, 2, 64))
  kv_groups, q_groups = jnp.arange(300)[None], jnp.full((1, 1), 211)
  out = dispatch.cached_attention(q, k_BKSD, k_BKSD, q_groups, kv_groups, impl="pallas", block_k=block_k)
  ref = dispatch.cached_attention(q, k_BKSD, k_BKSD, q_groups, kv_groups, impl="xla")
  errors["decode S=300"] = _rel_err(out, ref)
  return errors


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def bench_attention(shape, layout, impl, dtype, block_q, block_k, min_seconds) -> list[dict]:
  b, h, length, d = shape
  groups_L = layout_groups(layout, length)
  g_BL = jnp.broadcast_to(jnp.asarray(groups_L), (b, length))
  q, k, v = (jax.random.normal(key, (b, length, h, d), dtype) for key in jax.random.split(jax.random.key(0), 3))
  pairs = int(np.sum(groups_L[None, :] <= groups_L[:, None]))
  fwd_flops = 4 * b * h * d * pairs

  def fwd(q, k, v):
    return dispatch.attention(q, k, v, g_BL, g_BL, impl=impl, block_q=block_q, block_k=block_k)

  def fwd_bwd(q, k, v):
    return jax.grad(lambda q, k, v: fwd(q, k, v).astype(jnp.float32).sum(), argnums=(0, 1, 2))(q, k, v)

  rows = []
  for name, fn, flops in (("fwd", fwd, fwd_flops), ("fwd+bwd", fwd_bwd, 3.5 * fwd_flops)):
    call = timing.compiled(fn, q, k, v)
    seconds = timing.seconds_per_call(lambda: call(q, k, v), min_seconds, long_calls_once=False)
    rows.append({"layout": layout, "shape": "x".join(map(str, shape)), "pass": name, "impl": impl,
                 "ms": 1e3 * seconds, "tflops": flops / seconds / 1e12,
                 "skipped": skipped_share(groups_L, block_q, block_k) if impl == "pallas" else None})
  return rows


def bench_decode(cache_len, impl, dtype, block_k, min_seconds) -> dict:
  b, h, d = DECODE_SHAPE
  q = jax.random.normal(jax.random.key(0), (b, 1, h, d), dtype)
  k_BKSD = jax.random.normal(jax.random.key(1), (b, h, cache_len, d), dtype)
  kv_groups = jnp.broadcast_to(jnp.arange(cache_len), (b, cache_len))
  q_groups = jnp.full((b, 1), cache_len - 1)
  call = timing.compiled(lambda q, k, v: dispatch.cached_attention(q, k, v, q_groups, kv_groups, impl=impl,
                                                                   block_k=block_k), q, k_BKSD, k_BKSD)
  seconds = timing.seconds_per_call(lambda: call(q, k_BKSD, k_BKSD), min_seconds, long_calls_once=False)
  bytes_read = 2 * k_BKSD.size * k_BKSD.dtype.itemsize
  return {"cache": cache_len, "impl": impl, "ms": 1e3 * seconds, "gb_per_s": bytes_read / seconds / 1e9}


def _with_ratios(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
  """Add `vs_xla`: XLA's time over this row's time, for the row with the same `keys`."""
  xla = {tuple(r[k] for k in keys): r["ms"] for r in rows if r["impl"] == "xla"}
  return [{**r, "vs_xla": xla[tuple(r[k] for k in keys)] / r["ms"] if tuple(r[k] for k in keys) in xla else None}
          for r in rows]


def run(shapes=SHAPES, decode_lengths=DECODE_LENGTHS, impls: tuple[str, ...] | None = None,
        dtype: str | None = None, block_q: int = 128, block_k: int = 128, min_seconds: float = 1.0,
        check: bool = True, out: str | None = None) -> dict:
  impls = impls or default_impls()
  for impl in impls:
    dispatch.resolve(impl)
  dtype = dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
  device = f"{jax.devices()[0].device_kind} x {jax.device_count()}"
  print(f"bench attention: {', '.join(impls)}; {dtype}; blocks {block_q}x{block_k}; {device}", flush=True)
  result = {"device": device, "dtype": dtype, "block_q": block_q, "block_k": block_k, "impls": list(impls)}
  if check:
    result["kernel_check"] = check_kernel(block_q, block_k)
    mode = "interpret mode" if dispatch.pallas_target().interpret else "native"
    print(f"kernel vs reference ({mode}), largest relative error: " +
          ", ".join(f"{k} {v:.1e}" for k, v in result["kernel_check"].items()), flush=True)
  result["skipped_blocks"] = {f"{layout} L={s[2]}": skipped_share(layout_groups(layout, s[2]), block_q, block_k)
                              for s in shapes for layout in ("causal", "block-causal")}
  print("blocks the kernel skips: " + ", ".join(f"{k} {v:.1%}" for k, v in result["skipped_blocks"].items()))
  rows = []
  for shape in shapes:
    for layout in ("causal", "block-causal"):
      for impl in impls:
        rows += bench_attention(shape, layout, impl, jnp.dtype(dtype), block_q, block_k, min_seconds)
        print(f"  {layout} {shape} {impl}: done", flush=True)
  result["attention"] = _with_ratios(rows, ("layout", "shape", "pass"))
  print(table.format_table(result["attention"], [
      ("layout", "layout", "s"), ("shape", "BxHxLxD", "s"), ("pass", "pass", "s"), ("impl", "impl", "s"),
      ("ms", "ms", ".2f"), ("tflops", "TFLOP/s", ".3f"), ("vs_xla", "xla/this", ".2f"), ("skipped", "skipped", ".1%")]))
  decode = [bench_decode(n, impl, jnp.dtype(dtype), block_k, min_seconds) for n in decode_lengths for impl in impls]
  result["decode"] = _with_ratios(decode, ("cache",))
  b, h, d = DECODE_SHAPE
  print(f"decode attention: one query token, B={b} H={h} D={d}")
  print(table.format_table(result["decode"], [
      ("cache", "cache", "d"), ("impl", "impl", "s"), ("ms", "ms", ".3f"), ("gb_per_s", "KV GB/s", ".1f"),
      ("vs_xla", "xla/this", ".2f")]))
  result["peak_memory_gib"] = timing.peak_memory_gib()
  if result["peak_memory_gib"] is not None:
    print(f"peak device memory: {result['peak_memory_gib']:.2f} GiB")
  if out:
    with open(out, "w") as f:
      json.dump(result, f, indent=2)
  return result
