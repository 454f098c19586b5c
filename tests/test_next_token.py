"""Next-token model and sampler: cached == full forward, causality, greedy, CFG off, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ar_gen.decoding.logits import SamplingConfig, top_k_filter, top_p_filter
from ar_gen.decoding import driver
from ar_gen.decoding.heads import CategoricalHead
from ar_gen.layout import TokenLayout
from ar_gen.models.next_token import NextTokenModel
from tests.conftest import cached_logits

V, GRID, CLASSES = 24, (3, 4), 5


@pytest.fixture(scope="module")
def model():
  m = NextTokenModel(TokenLayout.raster(GRID, V), CLASSES, depth=2, dim=32, num_heads=4, num_kv_heads=2, qk_norm=True,
                     rngs=nnx.Rngs(0))
  m.output.kernel[...] = 0.5 * jax.random.normal(jax.random.PRNGKey(1), m.output.kernel.shape)  # not zero-init
  return m


def _tokens(seed, b=3):
  return jax.random.randint(jax.random.PRNGKey(seed), (b, GRID[0] * GRID[1]), 0, V)


def test_cached_decoding_equals_the_full_forward_pass(model):
  tokens, labels = _tokens(0), jnp.array([0, 3, CLASSES])
  full = model(tokens, labels)
  np.testing.assert_allclose(cached_logits(model, tokens, labels), full, atol=1e-4, rtol=0)
  assert float(jnp.std(full)) > 0.1


@pytest.mark.parametrize("j", [0, 5, 10])
def test_a_token_changes_no_logit_at_or_before_its_position(model, j):
  tokens, labels = _tokens(1), jnp.array([1, 2, 4])
  perturbed = tokens.at[:, j].set((tokens[:, j] + 1) % V)
  a, b = model(tokens, labels), model(perturbed, labels)
  np.testing.assert_array_equal(a[:, :j + 1], b[:, :j + 1])
  if j + 1 < tokens.shape[1]:
    assert float(jnp.abs(a[:, j + 1:] - b[:, j + 1:]).max()) > 1e-4  # and it does change what follows


def _sample(model, labels, seed, **kw):
  graphdef, state = nnx.split(model)
  cfg = SamplingConfig(**kw)
  fn = jax.jit(lambda state, labels, rng: driver.sample(nnx.merge(graphdef, state), CategoricalHead(cfg),
                                                        {"label": labels}, rng, cfg))
  return np.asarray(fn(state, labels, jax.random.PRNGKey(seed)))


def test_top_k_one_equals_greedy_argmax(model):
  labels = jnp.array([0, 1, 2, 3])
  greedy = _sample(model, labels, 0, temperature=0.0)
  np.testing.assert_array_equal(_sample(model, labels, 7, top_k=1), greedy)
  # and greedy is the argmax of the full forward pass at every position
  np.testing.assert_array_equal(np.argmax(model(jnp.asarray(greedy), labels), -1), greedy)


def test_disabled_guidance_equals_conditional_sampling(model):
  labels = jnp.array([4, 1, 0])
  plain = _sample(model, labels, 3)
  np.testing.assert_array_equal(_sample(model, labels, 3, cfg_scale=4.0, cfg_interval=(0.0, 0.0)), plain)
  guided = _sample(model, labels, 3, cfg_scale=4.0)
  assert not np.array_equal(guided, plain)


def test_same_seed_same_samples_other_seed_other_samples(model):
  labels = jnp.array([0, 1, 2, 3, 4])
  kw = dict(cfg_scale=2.0, top_k=10, top_p=0.9, temperature=1.2, cfg_schedule="linear")
  a, b, c = _sample(model, labels, 11, **kw), _sample(model, labels, 11, **kw), _sample(model, labels, 12, **kw)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_top_k_and_top_p_filters():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  np.testing.assert_array_equal(np.asarray(top_k_filter(logits, 2)) > -1e29, [[True, True, False, False]])
  kept = np.asarray(top_p_filter(logits, 0.7)) > -1e29
  np.testing.assert_array_equal(kept, [[True, True, False, False]])
  np.testing.assert_array_equal(np.asarray(top_p_filter(logits, 0.01)) > -1e29, [[True, False, False, False]])


@pytest.mark.parametrize("grid", [None, "bfloat16", 0.5])  # float logits; bf16 ones (ties); ties past the window
@pytest.mark.parametrize("k, p", [(900, 0.96), (5, 1.0), (50, 0.5), (1, 0.9), (3900, 0.9)])
def test_top_k_sampling_on_the_candidates_draws_the_tokens_of_the_full_vocabulary_path(k, p, grid):
  from ar_gen.decoding import logits as logits_lib  # pylint: disable=g-import-not-at-top
  logits_BV = jax.random.normal(jax.random.PRNGKey(0), (64, 4096)) * 3
  if grid == "bfloat16":
    logits_BV = logits_BV.astype(jnp.bfloat16).astype(jnp.float32)
  elif grid is not None:
    logits_BV = jnp.round(logits_BV / grid) * grid
  if grid is not None and k > 1:  # the k-th largest logit ties the next one in some rows
    values = jax.lax.top_k(logits_BV, k + 1)[0]
    assert bool(jnp.any(values[:, k] == values[:, k - 1]))
  cfg = SamplingConfig(temperature=0.9, top_k=k, top_p=p)
  for seed in range(5):
    rng = jax.random.PRNGKey(seed)
    full = jax.random.categorical(rng, logits_lib.top_p_filter(logits_lib.top_k_filter(logits_BV / 0.9, k), p),
                                  axis=-1)
    np.testing.assert_array_equal(logits_lib.sample_logits(logits_BV, rng, cfg), full)
