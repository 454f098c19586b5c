"""VQ and LFQ quantizers: nearest codes, straight-through gradients, the exact LFQ entropy, dead-code restart."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tokenizers import lfq, vq
from tokenizers.model import build_tokenizer
from tests.conftest import tiny_config


def test_vq_picks_the_nearest_normalised_code():
  q = vq.VectorQuantizer(64, 8, (3, 4), rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 4, 8))
  idx = q.indices(z)
  zn, codes = np.asarray(vq.l2_normalize(z)).reshape(-1, 8), np.asarray(q.codes())
  brute = np.argmin(((zn[:, None, :] - codes[None]) ** 2).sum(-1), axis=1)
  np.testing.assert_array_equal(np.asarray(idx).reshape(-1), brute)
  zq, idx2, aux = q(z)
  np.testing.assert_allclose(zq, q.embed(idx2), atol=1e-6)
  assert float(aux["code_hist"].sum()) == 24


@pytest.mark.parametrize("quantizer", ["vq", "lfq"])
def test_straight_through_gradients_reach_the_encoder(quantizer):
  config = tiny_config("mnist_vq.py" if quantizer == "vq" else "mnist_lfq.py")
  model = build_tokenizer(config.model, 1, config.data.image_size, nnx.Rngs(0))
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 16, 16, 1), minval=-1, maxval=1)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def rec_loss(params):
    x_rec, _ = nnx.merge(graphdef, params, rest)(x)
    return jnp.mean(jnp.square(x_rec - x))  # reconstruction only: no quantizer loss term

  grads = jax.jit(jax.grad(rec_loss))(params)  # jitted: op by op, the backward pass takes a minute on 2 cores
  enc = jax.tree.leaves(grads["encoder"])
  assert sum(float(jnp.sum(jnp.abs(g))) for g in enc) > 0


def test_lfq_indices_are_the_bits_and_embed_inverts_them():
  q = lfq.LookupFreeQuantizer(5, (2, 2))
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 5))
  idx = q.indices(z)  # [B, L]: the 2 x 2 map in raster order
  expected = ((np.asarray(z) > 0).astype(int) @ (2 ** np.arange(5))).reshape(3, 4)
  np.testing.assert_array_equal(idx, expected)
  np.testing.assert_array_equal(q.embed(idx), np.where(np.asarray(z) > 0, 1.0, -1.0))
  assert q.codebook_size == 32


@pytest.mark.parametrize("d", [1, 3, 6, 9, 10])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_lfq_entropy_equals_the_bruteforce_formula(d, temperature):
  z = 0.7 * jax.random.normal(jax.random.PRNGKey(d), (257, d))
  fast, brute = lfq.entropy_terms(z, temperature), lfq.entropy_terms_bruteforce(z, temperature)
  np.testing.assert_allclose(fast, brute, rtol=2e-5, atol=2e-5)


def test_lfq_entropy_for_18_bits_does_not_need_n_by_2_to_the_18():
  z = jax.random.normal(jax.random.PRNGKey(0), (4096, 18))
  compiled = jax.jit(lambda z: lfq.entropy_terms(z, 0.01)).lower(z).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < 4096 * 2 ** 18 * 4 / 16  # far less than one float32 N x 2^d matrix (4 GiB)
  per_sample, batch = compiled(z)
  assert 0 <= float(per_sample) and float(batch) <= 18 * np.log(2) + 1e-3


def test_lfq_entropy_loss_rewards_confident_and_diverse_codes():
  corners = jnp.asarray(list(itertools.product([-1.0, 1.0], repeat=4)))
  diverse = lfq.entropy_terms(corners, 0.01)
  collapsed = lfq.entropy_terms(jnp.ones((16, 4)), 0.01)
  assert float(diverse[0] - diverse[1]) < float(collapsed[0] - collapsed[1])
  np.testing.assert_allclose(diverse[1], 4 * np.log(2), rtol=1e-4)


def test_dead_codes_restart_from_encoder_outputs():
  q = vq.VectorQuantizer(16, 4, (4, 4), rngs=nnx.Rngs(0))
  q.ema_usage[...] = jnp.zeros(16).at[:4].set(0.25)
  z = vq.l2_normalize(jax.random.normal(jax.random.PRNGKey(3), (1, 4, 4, 4)))
  before = np.asarray(q.codebook[...])
  count = q.restart_dead_codes(z, jax.random.PRNGKey(0), threshold=0.5)
  after = np.asarray(q.codebook[...])
  assert int(count) == 12
  np.testing.assert_array_equal(after[:4], before[:4])
  pool = np.asarray(z).reshape(-1, 4)
  for row in after[4:]:
    assert np.min(np.abs(pool - row).max(axis=1)) < 0.01
  assert int(q.restart_dead_codes(z, jax.random.PRNGKey(0), threshold=0.0)) == 0
