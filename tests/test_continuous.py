"""The continuous family: KL bottleneck, diffusion schedule and head, MAR's masked steps, the causal variant."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ar_gen.decoding import driver
from ar_gen.decoding.heads import DiffusionHead
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.layout import TokenLayout
from ar_gen.models.causal_continuous import CausalContinuousModel
from ar_gen.models.mar import MARModel, MARSteps, in_grid_order, mask_schedule, random_orders
from ar_gen.nn.diffusion import GaussianDiffusion, space_timesteps
from ar_gen.nn.diffusion_mlp import DenoisingMLP
from ar_gen.runs.task import get_task
from ar_gen.train import trainer
from tests.conftest import tiny_ar_config, tiny_config
from tokenizers.kl import KLBottleneck, kl_divergence

LAYOUT = TokenLayout.raster((4, 4), kind="vectors", token_dim=3)


def _perturbed(module: nnx.Module, seed: int = 0, std: float = 0.05) -> nnx.Module:
  """`module` with every parameter moved by noise, so zero-initialised layers do something."""
  state = nnx.state(module, nnx.Param)
  leaves, tree = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  nnx.update(module, jax.tree.unflatten(tree, [x + std * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]))
  return module


def _mar(**kw) -> MARModel:
  return _perturbed(MARModel(LAYOUT, 5, 2, 32, 2, buffer_size=2, head_depth=2, head_width=32, dropout=0.0,
                             rngs=nnx.Rngs(0), **kw))


# ---------------------------------------------------------------------------------------------------- KL bottleneck
def test_kl_divergence_is_the_closed_form_and_the_scale_is_measured_on_data():
  mean, logvar = jnp.full((2, 2, 2, 3), 0.5), jnp.full((2, 2, 2, 3), math.log(0.25))
  expected = 12 * 0.5 * (0.25 + 0.25 - 1 - math.log(0.25))
  np.testing.assert_allclose(kl_divergence(mean, logvar), [expected, expected], rtol=1e-6)
  kl = KLBottleneck(3, (2, 2), stats_decay=0.5)
  means = 4.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 2, 2, 3))
  for _ in range(30):
    kl.update_stats(means)
  assert abs(float(kl.scale()) * float(jnp.std(means)) - 1) < 0.02
  moments = jnp.concatenate([means, jnp.zeros_like(means)], -1)
  tokens = kl.indices(moments)
  assert tokens.shape == (64, 4, 3) and abs(float(jnp.std(tokens)) - 1) < 0.05
  np.testing.assert_allclose(kl.embed(tokens), means, rtol=1e-5, atol=1e-5)  # decode divides the scale back out
  fixed = KLBottleneck(3, (2, 2), scale_factor=0.2325)
  fixed.update_stats(means)
  assert float(fixed.scale()) == pytest.approx(0.2325)


# ---------------------------------------------------------------------------------------------------- diffusion
def test_space_timesteps_is_adms_even_stride():
  assert space_timesteps(1000, "10") == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
  assert space_timesteps(10, "2,3") == [0, 4, 5, 7, 9]
  kept = space_timesteps(1000, "100")
  assert len(kept) == 100 and kept[0] == 0 and kept[-1] == 999
  with pytest.raises(ValueError, match="cannot take 20 diffusion steps"):
    space_timesteps(10, "20")


def test_respacing_keeps_the_alpha_bars_of_the_kept_steps():
  base = GaussianDiffusion.cosine(1000)
  spaced = base.respaced("25")
  np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[spaced.timestep_map], rtol=1e-9)
  assert base.betas.max() <= 0.999 and spaced.num_steps == 25


def test_the_reverse_process_with_the_exact_noise_prediction_samples_the_data_distribution():
  """For x_0 ~ N(0, s^2) every reverse step is Gaussian: eps = sqrt(1 - a) x_t / (a s^2 + 1 - a), and the variance is
  the posterior's plus coef1^2 Var[x_0 | x_t], which the learned range reaches with v = 2 frac - 1. The unclipped
  respaced sampler with them gives N(0, s^2) exactly (up to sampling error)."""
  diffusion = GaussianDiffusion.cosine(1000).respaced("50")
  s2 = 0.25
  x = jax.random.normal(jax.random.PRNGKey(0), (20000, 2))
  for i in reversed(range(diffusion.num_steps)):
    a = diffusion.alphas_cumprod[i]
    eps = np.sqrt(1 - a) * x / (a * s2 + 1 - a)
    exact = diffusion.posterior_variance[i] + diffusion.posterior_mean_coef1[i] ** 2 * s2 * (1 - a) / (a * s2 + 1 - a)
    low, high = diffusion.posterior_log_variance_clipped[i], diffusion.log_betas[i]
    v = 2 * (np.log(exact) - low) / (high - low) - 1 if i > 0 else 0.0
    out = jnp.concatenate([eps, jnp.full_like(eps, v)], -1)
    x = diffusion.p_sample(out, x, jnp.full((20000,), i), jax.random.normal(jax.random.PRNGKey(i + 1), x.shape))
  np.testing.assert_allclose(np.std(np.asarray(x), axis=0), [0.5, 0.5], atol=0.01)
  np.testing.assert_allclose(np.mean(np.asarray(x), axis=0), [0.0, 0.0], atol=0.02)


def test_guidance_one_is_the_conditional_prediction():
  net = _perturbed(DenoisingMLP(3, 8, 16, 2, rngs=nnx.Rngs(0)))
  x, t = jax.random.normal(jax.random.PRNGKey(1), (5, 3)), jnp.arange(5) * 100
  z, zu = jax.random.normal(jax.random.PRNGKey(2), (5, 8)), jax.random.normal(jax.random.PRNGKey(3), (5, 8))
  np.testing.assert_allclose(net.guided(x, t, z, zu, jnp.float32(1.0)), net(x, t, z), rtol=1e-5, atol=1e-6)
  guided = net.guided(x, t, z, zu, jnp.float32(3.0))
  eps_c, eps_u = net(x, t, z)[:, :3], net(x, t, zu)[:, :3]
  np.testing.assert_allclose(guided[:, :3], eps_u + 3 * (eps_c - eps_u), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(guided[:, 3:], net(x, t, z)[:, 3:], rtol=1e-5, atol=1e-6)


def test_a_briefly_trained_head_samples_a_two_dimensional_mixture():
  """Train the denoiser (condition: a constant z) on a mixture of two Gaussians; its samples have the mixture's
  mean and covariance and put half their mass near each component."""
  centers = jnp.asarray([[-1.0, 0.5], [1.0, -0.5]])
  std = 0.25

  def data(key, n):
    k1, k2 = jax.random.split(key)
    return centers[jax.random.bernoulli(k1, 0.5, (n,)).astype(jnp.int32)] + std * jax.random.normal(k2, (n, 2))

  diffusion = GaussianDiffusion.cosine(1000)
  net = DenoisingMLP(2, 4, 64, 3, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(net, optax.adam(2e-3), wrt=nnx.Param)
  z = jnp.ones((512, 4))

  @nnx.jit
  def step(net, optimizer, key):
    k1, k2, k3 = jax.random.split(key, 3)
    x0 = data(k1, 512)
    t = jax.random.randint(k2, (512,), 0, 1000)
    loss_fn = lambda net: jnp.mean(diffusion.training_loss(lambda x, tt: net(x, tt, z), x0, t,
                                                           jax.random.normal(k3, x0.shape)))
    loss, grads = nnx.value_and_grad(loss_fn)(net)
    optimizer.update(net, grads)
    return loss

  for i in range(1500):
    step(net, optimizer, jax.random.PRNGKey(i))
  head = DiffusionHead(net, diffusion.respaced("50"), clip_x0=3.0)
  samples = jax.jit(lambda key: head(jnp.ones((1, 2000, 4)), None, jnp.ones(()), key))(jax.random.PRNGKey(7))[0]
  reference = data(jax.random.PRNGKey(8), 20000)
  np.testing.assert_allclose(samples.mean(0), reference.mean(0), atol=0.08)
  np.testing.assert_allclose(np.cov(samples.T), np.cov(reference.T), atol=0.12)
  near_first = jnp.linalg.norm(samples - centers[0], axis=1) < 3 * std
  near_second = jnp.linalg.norm(samples - centers[1], axis=1) < 3 * std
  assert 0.4 < float(near_first.mean()) < 0.6 and float((near_first | near_second).mean()) > 0.9


# ---------------------------------------------------------------------------------------------------- MAR
def _mar_counts(num_tokens: int, num_steps: int) -> list[int]:
  """Tokens MAR's sample_tokens predicts per step, by its own mask arithmetic (masks, not counts)."""
  order = np.random.default_rng(0).permutation(num_tokens)
  mask = np.ones(num_tokens, bool)
  counts = []
  for step in range(num_steps):
    mask_len = np.floor(num_tokens * np.cos(math.pi / 2.0 * (step + 1) / num_steps))
    mask_len = max(1, min(mask.sum() - 1, mask_len))
    mask_next = np.zeros(num_tokens, bool)
    mask_next[order[:int(mask_len)]] = True
    to_predict = mask if step >= num_steps - 1 else mask ^ mask_next
    counts.append(int(to_predict.sum()))
    mask = mask_next
  return counts


@pytest.mark.parametrize("num_tokens,num_steps", [(256, 64), (256, 256), (16, 5), (64, 16), (10, 1)])
def test_the_mask_schedule_follows_mars_cosine_counts(num_tokens, num_steps):
  schedule = mask_schedule(num_tokens, num_steps)
  assert list(schedule.sizes) == _mar_counts(num_tokens, num_steps)
  assert sum(schedule.sizes) == num_tokens and min(schedule.sizes) >= 1
  if num_steps == num_tokens:
    assert set(schedule.sizes) == {1}


class _Recorder:
  """A head that emits, for every token of a step, the step's index (read back from the call count)."""

  def __init__(self, dim):
    self.dim, self.calls = dim, 0

  def __call__(self, z, uncond, scale, rng):
    self.calls += 1
    return jnp.full((*z.shape[:2], self.dim), float(self.calls))


def test_masked_sampling_reveals_every_token_exactly_once_in_the_schedules_counts():
  model = _mar()
  steps = MARSteps(model, 5)
  order = random_orders(jax.random.PRNGKey(0), 2, 16)
  head = _Recorder(3)
  cond = {"label": jnp.asarray([1, 2]), "order": order}
  tokens = jax.jit(lambda c: in_grid_order(driver.sample(steps, head, c, jax.random.PRNGKey(1), SamplingConfig()),
                                           order))(cond)
  step_of_token = np.asarray(tokens[..., 0])  # [B, L]: the step (1-based) that revealed each position
  for b in range(2):
    assert sorted(np.bincount(step_of_token[b].astype(int))[1:].tolist()) == sorted(steps.schedule.sizes)
    revealed_order = np.asarray(order[b])[np.argsort(step_of_token[b][np.asarray(order[b])], kind="stable")]
    np.testing.assert_array_equal(revealed_order, np.asarray(order[b]))  # in the order's sequence


def test_gathering_the_kept_tokens_equals_encoding_the_whole_sequence():
  """MAR drops the masked tokens from the encoder; the fixed-capacity gather gives the same z as a capacity of L."""
  model = _mar()
  tokens = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 3))
  mask = model.random_mask(3, jax.random.PRNGKey(1))
  assert int(jnp.sum(1 - mask[0])) <= model.train_capacity
  full = model(tokens, mask, jnp.asarray([0, 1, 5]), capacity=16)
  np.testing.assert_allclose(model(tokens, mask, jnp.asarray([0, 1, 5]), capacity=model.train_capacity), full,
                             rtol=1e-5, atol=1e-5)
  changed = tokens.at[:, :, 0].add(jnp.where(mask > 0, 10.0, 0.0))  # masked tokens' values are never read
  np.testing.assert_allclose(model(changed, mask, jnp.asarray([0, 1, 5]), capacity=16), full, rtol=1e-5, atol=1e-5)


def _sample(steps, head_net, cond, key, cfg, diffusion_steps="4"):
  head = DiffusionHead(head_net, GaussianDiffusion.cosine(1000).respaced(diffusion_steps), cfg.temperature)
  return jax.jit(lambda c, k: driver.sample(steps, head, c, k, cfg))(cond, key)


@pytest.mark.slow
def test_guidance_scale_one_plus_epsilon_is_conditional_sampling_and_a_seed_gives_the_same_samples():
  model = _mar()
  steps = MARSteps(model, 4)
  cond = {"label": jnp.asarray([1, 3]), "order": random_orders(jax.random.PRNGKey(0), 2, 16)}
  plain = _sample(steps, model.head, cond, jax.random.PRNGKey(2), SamplingConfig())
  guided = _sample(steps, model.head, cond, jax.random.PRNGKey(2), SamplingConfig(cfg_scale=1.0 + 1e-6))
  np.testing.assert_allclose(guided, plain, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(_sample(steps, model.head, cond, jax.random.PRNGKey(2), SamplingConfig()), plain)
  other = _sample(steps, model.head, cond, jax.random.PRNGKey(3), SamplingConfig())
  assert float(jnp.max(jnp.abs(other - plain))) > 0.1
  strong = _sample(steps, model.head, cond, jax.random.PRNGKey(2), SamplingConfig(cfg_scale=4.0))
  assert float(jnp.max(jnp.abs(strong - plain))) > 1e-3


def test_linear_guidance_ramps_with_the_revealed_tokens():
  schedule = mask_schedule(256, 64)
  masked_after = 256 - np.cumsum(schedule.sizes)
  np.testing.assert_allclose(schedule.progress[:-1], (256 - masked_after[:-1]) / 256)
  assert schedule.progress[-1] == pytest.approx(255 / 256)  # MAR keeps mask_len >= 1 in its ramp


# ---------------------------------------------------------------------------------------------------- causal variant
def test_the_causal_variants_cached_steps_equal_its_full_forward():
  model = _perturbed(CausalContinuousModel(LAYOUT, 5, 2, 32, 2, head_depth=1, head_width=16, rngs=nnx.Rngs(0)))
  tokens = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 3))
  labels = jnp.asarray([0, 4])
  full = jax.jit(lambda t: model(t, labels))(tokens)

  @jax.jit
  def cached(tokens):
    _, carry, cache = model.begin({"label": labels})
    steps = []
    for i in range(16):
      z, cache = model.step(carry, jnp.int32(i), cache)
      steps.append(z)
      carry = model.feed(tokens[:, i:i + 1], i, carry)
    return jnp.concatenate(steps, 1)

  np.testing.assert_allclose(cached(tokens), full, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------- task and errors
@pytest.fixture(scope="module")
def kl_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("kl"))
  trainer.train(tiny_config("mnist_kl.py", "total_steps=3", "ckpt_every_steps=3"), workdir)
  return workdir


# masked end to end is slow (~60 s); its schedule and sampling are tested fast above, the family by raster
@pytest.mark.parametrize("order", [pytest.param("masked", marks=pytest.mark.slow), "raster"])
def test_the_family_trains_and_samples_on_kl_tokens(kl_workdir, tmp_path, order):
  config = tiny_ar_config("mnist_mar.py", kl_workdir, f"model.order={order}", "model.decoder_depth=1",
                          "model.head_depth=1", "model.head_width=16", "sample.num_steps=4",
                          "sample.diffusion_steps=3", "total_steps=2", "ckpt_every_steps=2", "vis_every_steps=2")
  trainer.train(config, str(tmp_path / "run"))
  assert (tmp_path / "run" / "images" / "samples_0000002.png").exists()


def test_a_discrete_tokenizer_for_a_continuous_family_and_the_reverse_are_named(kl_workdir, trained_vq_workdir):
  from ar_gen.runs import frozen as frozen_lib
  config = tiny_ar_config("mnist_mar.py", trained_vq_workdir)
  with pytest.raises(ValueError, match="task mar generates a continuous .*gives 64 tokens \\(ids"):
    get_task(config, frozen_lib.load_all(config))
  config = tiny_ar_config("mnist_next_token.py", kl_workdir)
  with pytest.raises(ValueError, match="task next_token generates a quantizer's token ids.*vectors of 4"):
    get_task(config, frozen_lib.load_all(config))


def test_extracted_token_vectors_read_back_as_the_tokenizer_encodes_them(kl_workdir, tmp_path):
  from ar_gen.commands import extract_tokens
  from ar_gen.data import pipeline, sources
  from ar_gen.runs import frozen as frozen_lib
  meta = extract_tokens.extract(kl_workdir, "bundled:mnist:test", str(tmp_path / "tokens"), batch_size=500)
  assert meta["layout"]["kind"] == "vectors" and meta["layout"]["token_dim"] == 4
  source = sources.get_source(f"tokens:{tmp_path / 'tokens'}", "train")
  tokenizer = frozen_lib.load("tokenizer", kl_workdir)
  batch = next(iter(pipeline.eval_batches(tokenizer.config.data, 4, max_examples=4)))
  expected = np.asarray(jax.jit(lambda s, x: tokenizer.module(s).encode(x))(tokenizer.state, batch["image"]))
  for i in range(4):
    record = source[i]
    assert record["tokens"].dtype == np.float32 and record["tokens"].shape == (64, 4)
    np.testing.assert_allclose(record["tokens"], expected[i], rtol=1e-5, atol=1e-5)
    assert record["label"] == batch["label"][i]


def test_non_finite_latents_are_refused_by_extract_tokens(kl_workdir, tmp_path, monkeypatch):
  from ar_gen.commands import extract_tokens
  from ar_gen.runs import frozen as frozen_lib
  real_load = frozen_lib.load

  def diverged(name, source, abstract=False):
    component = real_load(name, source, abstract)
    state = jax.tree.map(lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x, component.state)
    component.state = state
    return component

  monkeypatch.setattr(frozen_lib, "load", diverged)
  with pytest.raises(ValueError, match="non-finite \\(NaN or inf\\) latents for image 0"):
    extract_tokens.extract(kl_workdir, "bundled:mnist:test", str(tmp_path / "tokens"), batch_size=100)
  assert not (tmp_path / "tokens" / "meta.json").exists()
