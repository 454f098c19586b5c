"""Pallas attention kernels (interpret mode on CPU) against their jnp reference; block skipping; dispatch.

Forward and gradients for causal and VAR block-causal layouts, key padding, grouped-query heads, fp32 and bf16,
head dims 64 and 128; decode attention for cache lengths that are not block multiples; lowering for GPU (Triton)
and TPU (Mosaic) without the hardware; the next-token model trained and sampled with impl='pallas' vs 'xla'.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ar_gen.decoding import driver
from ar_gen.decoding.heads import CategoricalHead
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.kernels import dispatch
from ar_gen.kernels import mask as masks
from ar_gen.kernels.decode_attention import decode_attention
from ar_gen.kernels.flash_attention import flash_attention, reference_attention
from ar_gen.layout import TokenLayout
from ar_gen.models.next_token import NextTokenModel

VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def var_groups(scales=VAR_SCALES) -> jax.Array:
  return jnp.concatenate([jnp.full((s * s,), k, jnp.int32) for k, s in enumerate(scales)])


def _qkv(b, length, h, kh, d, dtype, seed=0, kv_len=None):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  kv_len = kv_len or length
  return (jax.random.normal(kq, (b, length, h, d)).astype(dtype),
          jax.random.normal(kk, (b, kv_len, kh, d)).astype(dtype),
          jax.random.normal(kv, (b, kv_len, kh, d)).astype(dtype))


def _rel_err(a, b):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


LAYOUTS = {
    # causal, L not a block multiple, the second sequence with 9 padded keys
    "causal": (lambda: jnp.arange(200, dtype=jnp.int32), lambda: jnp.arange(200)[None] < jnp.array([[200], [191]])),
    "var": (var_groups, lambda: None),  # L = 680
}


F32, BF16 = (jnp.float32, 2e-5), (jnp.bfloat16, 3e-2)


@pytest.mark.parametrize("layout, dtype, tol, head_dim", [  # every pair of (layout, dtype, head dim) values
    ("causal", *F32, 64), ("causal", *BF16, 128), ("var", *F32, 128), ("var", *BF16, 64)])
def test_flash_forward_and_gradients_equal_the_reference(layout, dtype, tol, head_dim):
  groups_fn, valid_fn = LAYOUTS[layout]
  groups_L, valid_BS = groups_fn(), valid_fn()
  b, length = 2, groups_L.shape[0]
  q, k, v = _qkv(b, length, 4, 2, head_dim, dtype)
  groups_BL = jnp.broadcast_to(groups_L, (b, length))
  w_D = jnp.sin(jnp.arange(head_dim, dtype=jnp.float32))

  def loss(fn):
    return lambda q, k, v: jnp.sum(fn(q, k, v, groups_BL, groups_BL, valid_BS).astype(jnp.float32) * w_D)

  kernel = jax.jit(lambda *a: flash_attention(*a, backend="tpu", interpret=True))
  out, ref = kernel(q, k, v, groups_BL, groups_BL, valid_BS), reference_attention(q, k, v, groups_BL, groups_BL,
                                                                                 valid_BS)
  assert out.dtype == dtype and _rel_err(out, ref) < tol
  grads = jax.jit(jax.grad(loss(kernel), argnums=(0, 1, 2)))(q, k, v)
  ref_grads = jax.grad(loss(reference_attention), argnums=(0, 1, 2))(q, k, v)
  for name, g, r in zip("qkv", grads, ref_grads):
    assert g.dtype == dtype, name
    assert _rel_err(g, r) < tol, (name, _rel_err(g, r))
  if valid_BS is not None:  # padded keys get no gradient and change nothing
    np.testing.assert_array_equal(np.asarray(grads[1][1, 191:], np.float32), 0)


def test_the_triton_style_kernel_equals_the_reference_in_interpret_mode():
  q, k, v = _qkv(1, 90, 2, 1, 64, jnp.float32, seed=3)
  g = jnp.broadcast_to(jnp.arange(90) // 7, (1, 90))  # groups of 7 tokens
  f = lambda q, k, v: flash_attention(q, k, v, g, g, block_q=32, block_k=64, backend="gpu", interpret=True)
  r = lambda q, k, v: reference_attention(q, k, v, g, g)
  assert _rel_err(f(q, k, v), r(q, k, v)) < 2e-5
  gf = jax.grad(lambda *a: jnp.sum(f(*a) ** 2), argnums=(0, 1, 2))(q, k, v)
  gr = jax.grad(lambda *a: jnp.sum(r(*a) ** 2), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(gf, gr):
    assert _rel_err(a, b) < 2e-5


@pytest.mark.parametrize("length,index", [(1, 0), (1, 170), (1, 299), (13 * 13, 91)])
@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_decode_attention_equals_the_reference_for_caches_that_are_not_block_multiples(length, index, backend):
  b, kv_len = 2, 300
  q, k, v = _qkv(b, length, 4, 2, 64, jnp.float32, seed=length + index, kv_len=kv_len)
  kv_groups = jnp.broadcast_to(jnp.arange(kv_len), (b, kv_len))
  q_groups = jnp.broadcast_to(index + length - 1 if length > 1 else index, (b, length))  # one scale: one group
  valid = jnp.arange(kv_len)[None] < jnp.array([[index + length], [index + length]])
  ref = reference_attention(q, k, v, q_groups, kv_groups, valid)
  for splits in (1, 3):
    out = decode_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), q_groups, kv_groups, valid,
                           block_k=64, num_splits=splits, backend=backend, interpret=True)
    assert _rel_err(out, ref) < 2e-5, splits


def test_skipped_blocks_are_exactly_the_empty_ones():
  groups_BL = var_groups()[None]
  lp = 768
  qg = masks.pad_groups(groups_BL, lp, masks.NOBODY)
  kg = masks.pad_groups(groups_BL, lp, masks.HIDDEN)
  visible_BNM = masks.block_visibility(qg, kg, 128, 128)
  dense_LS = np.asarray(masks.group_mask(qg, kg)[0, 0]).reshape(6, 128, 6, 128).any(axis=(1, 3))
  np.testing.assert_array_equal(np.asarray(visible_BNM[0]), dense_LS)
  end_N, start_M = np.asarray(masks.kv_block_end(visible_BNM)[0]), np.asarray(masks.q_block_start(visible_BNM)[0])
  for i in range(6):  # the visited ranges hold every visible block and nothing else (monotone groups)
    np.testing.assert_array_equal(np.arange(6) < end_N[i], dense_LS[i])
    np.testing.assert_array_equal(np.arange(6) >= start_M[i], dense_LS[:, i])
  # VAR's mask is 38% empty (the last scale, 256 of 680 tokens, sees everything); at 128 x 128 blocks 8 of the 36
  # block pairs are empty; causal attention over 1024 tokens skips 28 of 64.
  assert masks.skipped_fraction(visible_BNM) == pytest.approx(8 / 36)
  causal_BL = jnp.arange(1024)[None]
  assert masks.skipped_fraction(masks.block_visibility(causal_BL, causal_BL, 128, 128)) == pytest.approx(28 / 64)


@pytest.mark.parametrize("platform,backend", [("cuda", "gpu"), ("tpu", "tpu")])
def test_kernels_lower_for_gpu_and_tpu_without_the_hardware(platform, backend):
  checks = [jax.export.DisabledSafetyCheck.custom_call(t) for t in ("__gpu$xla.gpu.triton", "tpu_custom_call")]
  q = jax.ShapeDtypeStruct((2, 680, 4, 64), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((2, 680, 2, 64), jnp.bfloat16)
  cache = jax.ShapeDtypeStruct((2, 2, 1024, 64), jnp.bfloat16)
  g = jax.ShapeDtypeStruct((2, 680), jnp.int32)
  fwd = lambda q, k, v, g: flash_attention(q, k, v, g, g, backend=backend).astype(jnp.float32).sum()
  for fn, args in [(jax.value_and_grad(fwd, argnums=(0, 1, 2)), (q, kv, kv, g)),
                   (lambda q, k, v, g: decode_attention(q[:, :1], k, v, g[:, :1], jnp.zeros((2, 1024), jnp.int32),
                                                        backend=backend), (q, cache, cache, g))]:
    exported = jax.export.export(jax.jit(fn), platforms=[platform], disabled_checks=checks)(*args)
    assert ("tpu_custom_call" if backend == "tpu" else "triton") in exported.mlir_module()


def test_dispatch_resolves_auto_by_platform_and_refuses_unknown_impls():
  assert dispatch.resolve("auto", "cpu") == "xla"
  assert dispatch.resolve("auto", "tpu") == dispatch.resolve("auto", "gpu") == "pallas"
  assert dispatch.resolve("cudnn", "cpu") == "cudnn"
  assert dispatch.pallas_target("cpu").interpret and not dispatch.pallas_target("gpu").interpret
  with pytest.raises(ValueError, match="palas.*not one of"):
    dispatch.resolve("palas")
  with pytest.raises(ValueError, match="palas"):
    NextTokenModel(TokenLayout.raster((2, 2), 8), 3, depth=1, dim=16, num_heads=2, attn_impl="palas", rngs=nnx.Rngs(0))


def _model(impl):
  return NextTokenModel(TokenLayout.raster((4, 4), 32), 5, depth=2, dim=64, num_heads=4, num_kv_heads=2,
                        qk_norm=True, attn_impl=impl, rngs=nnx.Rngs(0))


def test_training_and_sampling_with_pallas_equal_xla():
  tokens = jax.random.randint(jax.random.key(1), (4, 16), 0, 32)
  labels = jnp.array([0, 1, 2, 3])
  tx = optax.adam(3e-3)

  def losses(impl):
    graphdef, params = nnx.split(_model(impl))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
      def loss_fn(params):
        logits = nnx.merge(graphdef, params)(tokens, labels)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    out = []
    for _ in range(3):
      params, opt_state, loss = step(params, opt_state)
      out.append(float(loss))
    return np.array(out), nnx.merge(graphdef, params)

  xla_losses, xla_model = losses("xla")
  pallas_losses, pallas_model = losses("pallas")
  np.testing.assert_allclose(pallas_losses, xla_losses, atol=1e-4, rtol=0)
  assert xla_losses[-1] < xla_losses[0] - 0.05  # it trains
  config = SamplingConfig(temperature=1.0, top_k=4, cfg_scale=2.0)
  draws = [np.asarray(driver.sample(m, CategoricalHead(config), {"label": labels}, jax.random.key(7), config))
           for m in (xla_model, pallas_model)]
  np.testing.assert_array_equal(draws[0], draws[1])
