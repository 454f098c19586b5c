"""Draft-and-verify sampling keeps the target's distribution. Next-token models: every sequence of a tiny
vocabulary and length, counted against the target's exact joint (teacher-forced), with guidance and filters;
greedy decoding gives the target's greedy tokens; the window step over several positions equals single steps.
Continuous tokens (CSpD over the causal variant's diffusion head): a copy of the target as draft is accepted
nearly always (up to rounding, amplified by the head); a draft 1e-5 away is never accepted (the last-step test's
knife edge); the trajectory factor's sign; heads that cannot be aligned are refused."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from ar_gen.decoding import driver
from ar_gen.decoding import speculative_rules as rules
from ar_gen.decoding import speculative_sampling as spec
from ar_gen.decoding.heads import CategoricalHead, DiffusionHead
from ar_gen.decoding.logits import SamplingConfig, combine_guidance, filtered_log_probs, guidance_scale
from ar_gen.layout import TokenLayout
from ar_gen.models.causal_continuous import CausalContinuousModel
from ar_gen.models.next_token import NextTokenModel
from ar_gen.nn.diffusion import GaussianDiffusion

LAYOUT = TokenLayout.raster((1, 3), 3)  # 3 tokens of 3 ids: 27 sequences
NUM_CLASSES = 2


def _perturbed(module, seed, std=0.5):
  state = nnx.state(module, nnx.Param)
  leaves, tree = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  nnx.update(module, jax.tree.unflatten(tree, [x + std * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]))
  return module


@pytest.fixture(scope="module")
def models():
  target = _perturbed(NextTokenModel(LAYOUT, NUM_CLASSES, 2, 32, 2, rngs=nnx.Rngs(0)), seed=1)
  draft = _perturbed(NextTokenModel(LAYOUT, NUM_CLASSES, 1, 16, 2, rngs=nnx.Rngs(2)), seed=3)
  return target, draft


def _exact_joint(model, label, cfg):
  """P(sequence) [27] under the target's own sampling distribution (teacher-forced logits, guidance, filters)."""
  seqs = jnp.asarray(list(itertools.product(range(3), repeat=3)), jnp.int32)
  logits = model(seqs, jnp.full((27,), label))
  if cfg.guided:
    uncond = model(seqs, jnp.full((27,), NUM_CLASSES))
    scale = jnp.stack([guidance_scale(cfg, jnp.int32(p), 3) for p in range(3)])
    logits = combine_guidance(logits, uncond, scale[None, :, None])
  log_p = filtered_log_probs(logits.reshape(81, 3), cfg).reshape(27, 3, 3)
  return np.exp(np.asarray(jnp.sum(jnp.take_along_axis(log_p, seqs[..., None], -1)[..., 0], -1), np.float64))


def _sampler(method, target, draft, cfg, gamma, prefill=0, valid_B=None):
  """sampler(cond, key) -> (tokens, stats) of the draft-model method or the draft-free one."""
  if method == "jacobi":
    return lambda cond, key: spec.sample_jacobi(target, cond, key, cfg, gamma, prefill=prefill, valid_B=valid_B)
  return lambda cond, key: spec.sample(target, draft, cond, key, rules.CategoricalRule(cfg), gamma, prefill=prefill,
                                       valid_B=valid_B)


GUIDED_TOP_K = SamplingConfig(temperature=0.8, top_k=2, cfg_scale=2.0, cfg_schedule="linear")


@pytest.mark.parametrize("method,cfg,gamma,prefill", [
    ("draft", SamplingConfig(), 1, 0), ("draft", SamplingConfig(), 3, 0), ("draft", GUIDED_TOP_K, 1, 0),
    ("draft", GUIDED_TOP_K, 3, 0), ("draft", GUIDED_TOP_K, 2, 1), ("jacobi", SamplingConfig(), 3, 0),
    ("jacobi", GUIDED_TOP_K, 2, 0), ("jacobi", GUIDED_TOP_K, 3, 1)])
def test_speculative_sequences_follow_the_targets_exact_joint(models, method, cfg, gamma, prefill):
  """With a draft model and draft-free (Jacobi, whose drafts are coupled across rounds), with and without
  target-only pre-fill."""
  target, draft = models
  label = 1
  run = jax.jit(jax.vmap(lambda key: _sampler(method, target, draft, cfg, gamma, prefill)(
      {"label": jnp.full((4,), label)}, key)))
  tokens, stats_ = run(jax.random.split(jax.random.PRNGKey(gamma), 1500))  # 6000 sequences
  codes = np.asarray(tokens).reshape(-1, 3) @ np.asarray([9, 3, 1])
  observed = np.bincount(codes, minlength=27)
  expected = _exact_joint(target, label, cfg) * len(codes)
  keep = expected > 0
  assert observed[~keep].sum() == 0
  assert stats.chisquare(observed[keep], expected[keep] * observed.sum() / expected[keep].sum()).pvalue > 1e-3
  accepted = int(np.sum(stats_.accepted_K)) / max(int(np.sum(stats_.drafted_K)), 1)
  assert 0.01 < accepted < 0.99  # the draft really differs from the target and is really used


def test_greedy_speculation_gives_the_targets_greedy_tokens(models):
  """With a draft model and draft-free."""
  target, draft = models
  cfg = SamplingConfig(temperature=0.0, cfg_scale=1.5)
  cond = {"label": jnp.asarray([0, 1, 1, 0])}
  plain = jax.jit(lambda: driver.sample(target, CategoricalHead(cfg), cond, jax.random.PRNGKey(0), cfg))()
  for method in ("draft", "jacobi"):
    fast, _ = jax.jit(lambda: _sampler(method, target, draft, cfg, 2)(cond, jax.random.PRNGKey(5)))()
    np.testing.assert_array_equal(fast, plain)


@pytest.mark.parametrize("gamma", [1, 2])
def test_a_draft_equal_to_the_target_is_always_accepted(models, gamma):
  target, _ = models
  _, stats_ = jax.jit(lambda: spec.sample(target, target, {"label": jnp.arange(512) % NUM_CLASSES},
                                          jax.random.PRNGKey(0), rules.CategoricalRule(SamplingConfig()), gamma))()
  assert int(np.sum(stats_.accepted_K)) == int(np.sum(stats_.drafted_K)) > 0
  # gamma drafts + the target's own token per round; with gamma = 1 the second round's draft reads the cache entry
  # of the first round's last draft, which only the window's extra draft step writes
  assert int(stats_.rounds) == {1: 2, 2: 1}[gamma]


@pytest.mark.parametrize("method", ["draft", "jacobi"])
def test_rows_that_pad_the_batch_never_move_its_stop(models, method):
  """Rows marked not valid (a batch padded to the device count) change neither the real rows' tokens nor the
  counts; as real rows they would (the batch commits the fewest accepted drafts of its rows)."""
  target, draft = models
  run = lambda b, valid: jax.jit(lambda key: _sampler(method, target, draft, SamplingConfig(), 3, valid_B=valid)(
      {"label": jnp.arange(b) % NUM_CLASSES}, key))
  key = jax.random.PRNGKey(5)
  real, real_stats = run(2, None)(key)
  padded, padded_stats = run(16, jnp.arange(16) < 2)(key)
  np.testing.assert_array_equal(padded[:2], real)
  for a, b in zip(real_stats, padded_stats):
    np.testing.assert_array_equal(a, b)
  _, counted_stats = run(16, None)(key)
  assert int(counted_stats.rounds) >= int(real_stats.rounds)  # more rows: never a later stop
  assert int(np.sum(counted_stats.drafted_K)) > int(np.sum(real_stats.drafted_K))  # and the pads counted


def test_draft_calls_count_the_prefill_step_and_bands_name_the_positions_they_count(models):
  target, draft = models
  _, stats_ = jax.jit(lambda key: spec.sample(target, draft, {"label": jnp.zeros((2,), jnp.int32)}, key,
                                              rules.CategoricalRule(SamplingConfig()), 1, prefill=1))(
      jax.random.PRNGKey(0))
  assert int(stats_.draft_calls) == 1 + 2 * int(stats_.rounds)  # the prefill read, then gamma + 1 a round
  summary = spec.summarize(stats_, 1, 10)
  # L = 10: _count bins position p into p * 4 // 10
  assert summary["bands"] == ["tokens 0-2", "tokens 3-4", "tokens 5-7", "tokens 8-9"]
  assert [p * 4 // 10 for p in range(10)] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
  merged = spec.merge_summaries([summary, summary])
  assert merged["rounds"] == 2 * summary["rounds"] and merged["acceptance"] == summary["acceptance"]
  assert merged["plain_target_calls"] == 20


def test_a_window_step_equals_single_steps(models):
  target, _ = models
  labels = jnp.asarray([0, 1])
  tokens = jnp.asarray([[2, 0, 1], [1, 1, 0]])
  _, carry, cache = target.begin({"label": labels}, spare_slots=3)
  inputs = jnp.concatenate([carry, target.feed(tokens[:, :2], 0, carry)], axis=1)
  window, _ = target.step(inputs, 0, cache)
  np.testing.assert_allclose(window, target(tokens, labels), rtol=1e-5, atol=1e-5)
  traced, _ = jax.jit(lambda i: target.step(inputs, i, cache))(jnp.int32(0))  # the sampler's traced index
  np.testing.assert_allclose(traced, window, rtol=1e-5, atol=1e-5)
  late, _ = target.step(jnp.concatenate([inputs, inputs], axis=1)[:, :4], 1, cache)  # runs past the end: no error
  assert late.shape == (2, 4, 3)


def test_mismatched_layouts_are_refused(models):
  target, _ = models
  other = NextTokenModel(TokenLayout.raster((1, 4), 3), NUM_CLASSES, 1, 16, 2, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="same token layout"):
    spec.sample(target, other, {"label": jnp.zeros((1,), jnp.int32)}, jax.random.PRNGKey(0),
                rules.CategoricalRule(SamplingConfig()), 2)


# ---------------------------------------------------------------------------------------------------- continuous
def _causal(depth, dim, seed):
  model = CausalContinuousModel(TokenLayout.raster((2, 2), kind="vectors", token_dim=3), NUM_CLASSES, depth, dim, 2,
                                head_depth=1, head_width=16, rngs=nnx.Rngs(seed))
  return _perturbed(model, seed + 10, std=0.1)


def _diffusion_rule(draft, target, cfg, **kw):
  schedule = GaussianDiffusion.cosine(1000).respaced("5")
  return rules.DiffusionRule(DiffusionHead(draft.head, schedule, cfg.temperature),
                            DiffusionHead(target.head, schedule, cfg.temperature), cfg, **kw)


@pytest.mark.parametrize("cfg", [SamplingConfig(), SamplingConfig(cfg_scale=2.0)], ids=["plain", "guided"])
def test_continuous_speculation_with_the_target_as_draft_accepts_nearly_everything(cfg):
  """Not every draft: the draft's one-position steps and the target's window step round differently, and the
  head's first reverse step (beta near 1) amplifies that beyond the last step's tiny std (docs/speculative.md)."""
  target = _causal(2, 32, 0)
  tokens, stats_ = jax.jit(lambda: spec.sample(target, target, {"label": jnp.arange(64) % NUM_CLASSES},
                                               jax.random.PRNGKey(1), _diffusion_rule(target, target, cfg), 3))()
  assert int(np.sum(stats_.accepted_K)) >= 0.8 * int(np.sum(stats_.drafted_K)) > 0
  assert int(stats_.fallbacks) <= 0.05 * int(np.sum(stats_.drafted_K))  # rare; the count depends on round-off
  assert tokens.shape == (64, 4, 3) and bool(jnp.all(jnp.isfinite(tokens))) and not bool(jnp.any(tokens == 0))


@pytest.mark.parametrize("trajectory_factor", [False, True])
def test_continuous_speculation_rejects_a_draft_whose_weights_differ_by_noise_of_std_1e5(trajectory_factor):
  """The last-step rule is a knife edge: a draft equal to the target up to weight noise of std 1e-5 has none of
  its drafts accepted, with the exact rule and with the paper's trajectory factor; every token is replaced by a
  residual draw (the fallback, never zeros, where those fail)."""
  target, draft = _causal(2, 32, 0), _perturbed(_causal(2, 32, 0), 99, std=1e-5)
  rule = _diffusion_rule(draft, target, SamplingConfig(), trajectory_factor=trajectory_factor)
  tokens, stats_ = jax.jit(lambda: spec.sample(target, draft, {"label": jnp.arange(64) % NUM_CLASSES},
                                               jax.random.PRNGKey(1), rule, 3))()
  assert int(np.sum(stats_.accepted_K)) == 0 and int(np.sum(stats_.drafted_K)) == 64 * 4
  assert int(stats_.rounds) == 4  # one token per round
  assert bool(jnp.all(jnp.isfinite(tokens))) and not bool(jnp.any(tokens == 0))


def test_the_trajectory_factor_raises_acceptance_when_the_draft_path_is_wider():
  """log Sigma = sum log s_q,t - sum log s_p,t (the paper's prod s_q / s_p): a draft path of larger stds accepts
  more drafts than equal paths, a narrower one fewer."""
  target, draft = _causal(2, 32, 0), _causal(1, 16, 1)
  rule = _diffusion_rule(draft, target, SamplingConfig(), trajectory_factor=True)
  n, g, d = 4000, 1, 3
  mean_q, mean_p = jnp.zeros((n, g, d)), jnp.full((n, g, d), 0.5)
  log_std = jnp.zeros((n, g, d))
  drafts = jax.random.normal(jax.random.PRNGKey(0), (n, g, d))
  rates = []
  for path_q in (-1.0, 0.0, 1.0):
    q = rules._Last(mean_q, log_std, jnp.full((n, g), path_q))
    p = rules._Last(mean_p, log_std, jnp.zeros((n, g)))
    rates.append(float(jnp.mean(rule.judge(jax.random.PRNGKey(1), drafts, q, p, drafts).accepted)))
  assert rates[0] < rates[1] < rates[2], rates


def test_heads_that_cannot_be_aligned_or_a_zero_temperature_are_refused():
  target, draft = _causal(2, 32, 0), _causal(1, 16, 1)
  five, ten = GaussianDiffusion.cosine(1000).respaced("5"), GaussianDiffusion.cosine(1000).respaced("10")
  with pytest.raises(ValueError, match="sample alike"):
    rules.DiffusionRule(DiffusionHead(draft.head, five), DiffusionHead(target.head, ten), SamplingConfig())
  with pytest.raises(ValueError, match="temperature > 0"):
    _diffusion_rule(draft, target, SamplingConfig(temperature=0.0))
