"""Speculative decoding keeps the target's distribution: one step, the residual, windows with truncation (and the
official CSpD scheme without it, which does not), fallbacks, draft == target, discrete steps and greedy decoding.
No trained model: Gaussians and small categorical chains with known answers, fixed seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ar_gen.decoding.logits import SamplingConfig, filtered_log_probs, sample_logits
from ar_gen.decoding.speculative import (Gaussian, categorical_speculative, first_rejection, gaussian_residual,
                                         gaussian_speculative, log1mexp)

N = 200_000
KEY = jax.random.PRNGKey(0)


def _gauss(mean, std, n=N, d=1):
  return Gaussian(jnp.full((n, d), mean, jnp.float32), jnp.full((n, d), np.log(std), jnp.float32))


def _tv_1d(p_mean, p_std, q_mean, q_std):
  x = np.linspace(-12, 12, 200_001)
  return 0.5 * np.trapezoid(np.abs(stats.norm.pdf(x, p_mean, p_std) - stats.norm.pdf(x, q_mean, q_std)), x)


def test_log1mexp_is_accurate_at_both_ends():
  a = jnp.asarray([-1e-8, -0.1, -0.693, -0.7, -5.0, -50.0])
  a64 = np.asarray(a, np.float64)
  exact = np.where(a64 > -0.5, np.log(-np.expm1(a64)), np.log1p(-np.exp(a64)))  # float64, Maechler's two branches
  np.testing.assert_allclose(log1mexp(a), exact, rtol=1e-5)
  assert float(log1mexp(jnp.float32(-1e-8))) < -18 and float(log1mexp(jnp.float32(0.0))) == -np.inf


def test_one_gaussian_step_reproduces_the_target_with_acceptance_one_minus_tv():
  p, q = _gauss(1.0, 0.5), _gauss(0.0, 1.0)
  k_draft, k_fall, k_step = jax.random.split(KEY, 3)
  out = gaussian_speculative(k_step, q.sample(k_draft), p, q, p.sample(k_fall))
  x = np.asarray(out.tokens[:, 0])
  assert abs(x.mean() - 1.0) < 0.01 and abs(x.std() - 0.5) < 0.01
  assert stats.kstest(x, stats.norm(1.0, 0.5).cdf).pvalue > 1e-3
  assert float(jnp.mean(out.accepted)) == pytest.approx(1 - _tv_1d(1.0, 0.5, 0.0, 1.0), abs=0.005)
  assert int(jnp.sum(out.fell_back)) < 10  # (1 - TV)^16 of the rejected


def test_one_step_in_several_dimensions_reproduces_the_target_mean_and_covariance():
  d = 4
  p = Gaussian(jnp.tile(jnp.asarray([[0.5, -1.0, 0.0, 2.0]]), (N, 1)), jnp.tile(jnp.log(jnp.asarray([[0.7, 1.2, 0.4, 1.0]])), (N, 1)))
  q = Gaussian(jnp.zeros((N, d)), jnp.zeros((N, d)))
  k_draft, k_fall, k_step = jax.random.split(KEY, 3)
  out = gaussian_speculative(k_step, q.sample(k_draft), p, q, p.sample(k_fall), num_proposals=32)
  x = np.asarray(out.tokens, np.float64)
  np.testing.assert_allclose(x.mean(0), [0.5, -1.0, 0.0, 2.0], atol=0.01)
  np.testing.assert_allclose(np.cov(x.T), np.diag(np.asarray([0.7, 1.2, 0.4, 1.0]) ** 2), atol=0.015)
  for j, (m, s) in enumerate([(0.5, 0.7), (-1.0, 1.2), (0.0, 0.4), (2.0, 1.0)]):
    assert stats.kstest(x[:, j], stats.norm(m, s).cdf).pvalue > 1e-3


def test_the_residual_sampler_matches_the_integrated_residual_density():
  p, q = _gauss(1.0, 0.5, n=100_000), _gauss(0.0, 1.0, n=100_000)
  x, found = gaussian_residual(KEY, p, q, num_proposals=64)
  assert bool(jnp.all(found))
  edges = np.linspace(-1.5, 3.5, 26)
  grid = np.linspace(-1.5, 3.5, 100_001)
  residual = np.maximum(stats.norm.pdf(grid, 1.0, 0.5) - stats.norm.pdf(grid, 0.0, 1.0), 0)
  cdf = np.concatenate([[0], np.cumsum((residual[1:] + residual[:-1]) / 2 * np.diff(grid))])
  expected = np.diff(np.interp(edges, grid, cdf / cdf[-1]))
  observed = np.histogram(np.asarray(x[:, 0]), edges)[0] / x.shape[0]
  np.testing.assert_allclose(observed, expected, atol=0.006)
  assert np.mean(np.asarray(x[:, 0]) < 0.4) < 0.002  # where q > p the residual has no mass


def test_a_failed_resampling_falls_back_to_the_given_token_never_to_zeros():
  p, q = _gauss(0.1, 1.0, n=20_000), _gauss(0.0, 1.0, n=20_000)  # TV ~ 0.04: a single proposal rarely lands
  fallback = 3.0 + jax.random.normal(jax.random.PRNGKey(5), (20_000, 1))
  out = gaussian_speculative(KEY, q.sample(jax.random.PRNGKey(1)), p, q, fallback, num_proposals=1)
  fell = np.asarray(out.fell_back)
  assert fell.sum() > 100 and not np.any(fell & np.asarray(out.accepted))
  np.testing.assert_array_equal(np.asarray(out.tokens)[fell], np.asarray(fallback)[fell])
  assert not np.any(np.asarray(out.tokens) == 0.0)


def test_draft_equal_to_target_accepts_everything_and_keeps_the_drafts():
  p = _gauss(0.3, 0.8, n=10_000, d=3)
  x = p.sample(jax.random.PRNGKey(2))
  out = gaussian_speculative(KEY, x, p, p, jnp.zeros_like(x))
  assert bool(jnp.all(out.accepted)) and not bool(jnp.any(out.fell_back))
  np.testing.assert_array_equal(out.tokens, x)
  logits = jax.random.normal(KEY, (10_000, 7))
  tokens = jax.random.categorical(jax.random.PRNGKey(3), logits)
  log_p = jax.nn.log_softmax(logits)
  same = categorical_speculative(jax.random.PRNGKey(4), tokens, log_p, log_p)
  assert bool(jnp.all(same.accepted)) and bool(jnp.all(same.tokens == tokens))


def test_first_rejection_is_the_index_of_the_first_false():
  accepted = jnp.asarray([[True, True, False, True], [True, True, True, True], [False, True, True, True]])
  np.testing.assert_array_equal(first_rejection(accepted), [2, 4, 0])


# ------------------------------------------------------------------------------------------------ windows
# A two-step Gaussian AR chain: x1 ~ N(0, 1), x2 | x1 ~ N(0.9 x1, 0.3^2) (the target); the draft is another chain.
TARGET, DRAFT = (0.0, 1.0, 0.9, 0.0, 0.3), (0.3, 1.2, 0.5, 0.2, 0.5)  # x1 mean, x1 std, slope, offset, x2 std


def _step1(chain, n):
  return _gauss(chain[0], chain[1], n=n)


def _step2(chain, x1_N1):
  return Gaussian(chain[2] * x1_N1 + chain[3], jnp.full_like(x1_N1, np.log(chain[4])))


def _window_with_truncation(key, n):
  """Draft two tokens; verify x1 on the empty context and x2 on the context grown by the draft's x1; at the first
  rejection resample from the residual and drop what follows (the target then draws x2 itself)."""
  k = jax.random.split(key, 6)
  q1 = _step1(DRAFT, n)
  x1q = q1.sample(k[0])
  q2 = _step2(DRAFT, x1q)
  x2q = q2.sample(k[1])
  p1, p2 = _step1(TARGET, n), _step2(TARGET, x1q)  # the target's gamma + 1 contexts: [], [x1q]
  s1 = gaussian_speculative(k[2], x1q, p1, q1, p1.sample(k[3]))
  s2 = gaussian_speculative(k[4], x2q, p2, q2, p2.sample(k[5]))
  stop = first_rejection(jnp.stack([s1.accepted, s2.accepted], axis=1))
  x2_after_rejection = _step2(TARGET, s1.tokens).sample(jax.random.fold_in(key, 9))
  x2 = jnp.where((stop == 0)[:, None], x2_after_rejection, s2.tokens)
  return jnp.concatenate([s1.tokens, x2], axis=1)


def _window_one_context_no_truncation(key, n):
  """The official CSpD code's scheme: the target judges every window token from the pre-window context (here the
  empty one: x2's marginal), and a rejected token is replaced without dropping the ones after it."""
  k = jax.random.split(key, 6)
  q1 = _step1(DRAFT, n)
  x1q = q1.sample(k[0])
  q2 = _step2(DRAFT, x1q)
  x2q = q2.sample(k[1])
  p1 = _step1(TARGET, n)
  p2_marginal = _gauss(TARGET[3], float(np.hypot(TARGET[2] * TARGET[1], TARGET[4])), n=n)
  s1 = gaussian_speculative(k[2], x1q, p1, q1, p1.sample(k[3]))
  s2 = gaussian_speculative(k[4], x2q, p2_marginal, q2, p2_marginal.sample(k[5]))
  return jnp.concatenate([s1.tokens, s2.tokens], axis=1)


def test_draft_and_verify_with_truncation_reproduces_the_joint_and_the_one_context_scheme_does_not():
  target_cov = np.asarray([[1.0, 0.9], [0.9, 0.9 ** 2 + 0.3 ** 2]])
  x = np.asarray(_window_with_truncation(KEY, N), np.float64)
  np.testing.assert_allclose(x.mean(0), [0.0, 0.0], atol=0.01)
  np.testing.assert_allclose(np.cov(x.T), target_cov, atol=0.02)
  assert stats.kstest((x[:, 1] - 0.9 * x[:, 0]) / 0.3, "norm").pvalue > 1e-3
  official = np.asarray(_window_one_context_no_truncation(KEY, N), np.float64)
  np.testing.assert_allclose(np.var(official, axis=0), np.diag(target_cov), atol=0.02)  # each marginal right...
  assert abs(np.cov(official.T)[0, 1]) < 0.05  # ...the joint not: x2 comes out independent of x1 (0.9 in p)


# ------------------------------------------------------------------------------------------------ discrete
P1, Q1 = np.asarray([0.5, 0.3, 0.2]), np.asarray([0.2, 0.2, 0.6])
P2 = np.asarray([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])  # p(x2 | x1), rows x1
Q2 = np.asarray([[0.3, 0.3, 0.4], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]])


def _categorical_window(key, n):
  k = jax.random.split(key, 5)
  log = lambda a: jnp.log(jnp.asarray(a, jnp.float32))
  x1q = jax.random.categorical(k[0], jnp.broadcast_to(log(Q1), (n, 3)))
  x2q = jax.random.categorical(k[1], log(Q2)[x1q])
  s1 = categorical_speculative(k[2], x1q, jnp.broadcast_to(log(P1), (n, 3)), jnp.broadcast_to(log(Q1), (n, 3)))
  s2 = categorical_speculative(k[3], x2q, log(P2)[x1q], log(Q2)[x1q])
  x2_after_rejection = jax.random.categorical(k[4], log(P2)[s1.tokens])
  x2 = jnp.where(s1.accepted, s2.tokens, x2_after_rejection)
  return np.asarray(s1.tokens), np.asarray(x2), float(jnp.mean(s1.accepted))


def test_discrete_draft_and_verify_reproduces_the_target_joint():
  x1, x2, accepted = _categorical_window(KEY, N)
  observed = np.bincount(x1 * 3 + x2, minlength=9)
  expected = (P1[:, None] * P2).reshape(-1) * N
  assert stats.chisquare(observed, expected).pvalue > 1e-3
  assert accepted == pytest.approx(np.minimum(P1, Q1).sum(), abs=0.005)  # 1 - TV(p, q)


def test_discrete_speculation_at_temperature_zero_gives_the_targets_greedy_tokens():
  kp, kq = jax.random.split(KEY)
  target_logits, draft_logits = jax.random.normal(kp, (5000, 11)), jax.random.normal(kq, (5000, 11))
  greedy = SamplingConfig(temperature=0.0)
  drafts = sample_logits(draft_logits, KEY, greedy)
  out = categorical_speculative(jax.random.PRNGKey(7), drafts, filtered_log_probs(target_logits, greedy),
                                filtered_log_probs(draft_logits, greedy))
  np.testing.assert_array_equal(out.tokens, jnp.argmax(target_logits, axis=-1))
  np.testing.assert_array_equal(out.accepted, drafts == jnp.argmax(target_logits, axis=-1))


@pytest.mark.parametrize("cfg", [SamplingConfig(temperature=0.8, top_k=3), SamplingConfig(top_p=0.6),
                                 SamplingConfig(temperature=1.3, top_k=4, top_p=0.9)])
def test_filtered_log_probs_are_the_distribution_sample_logits_draws_from(cfg):
  logits = jnp.broadcast_to(jnp.asarray([2.0, 1.5, 1.0, 0.2, -0.5, -1.0]), (N, 6))
  drawn = np.asarray(sample_logits(logits, KEY, cfg))
  probs = np.exp(np.asarray(filtered_log_probs(logits[:1], cfg)[0], np.float64))
  assert probs.sum() == pytest.approx(1.0, abs=1e-5)
  observed = np.bincount(drawn, minlength=6)
  assert observed[probs == 0].sum() == 0
  keep = probs > 0
  assert stats.chisquare(observed[keep], probs[keep] / probs[keep].sum() * N).pvalue > 1e-3
