"""Next-scale prediction (VAR): the multi-scale quantizer, the block-causal model, the scale-wise cached sampler,
and the family end to end through the trainer and `ar-gen sample`."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ar_gen import config as config_lib
from ar_gen.commands import sample as sample_lib
from ar_gen.decoding import driver
from ar_gen.decoding.heads import CategoricalHead
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.families.next_scale import ResidualSteps
from ar_gen.models.next_scale import NextScaleModel
from ar_gen.runs.run import Run
from ar_gen.train import trainer
from tests.conftest import (CONFIGS, assert_psnr_rises_with_each_map, tiny_ar_config, tiny_config,
                            train_progressive_tokenizer)
from tokenizers.frequency import FrequencyBandQuantizer
from tokenizers.model import build_tokenizer
from tokenizers.multiscale import MultiScaleQuantizer, area_matrix, bicubic_matrix

SCALES = (1, 2, 3, 5)
VOCAB, CODE_DIM = 32, 4


@pytest.fixture(scope="module")
def quantizer():
  return MultiScaleQuantizer(VOCAB, CODE_DIM, SCALES, rngs=nnx.Rngs(0))


def _model(impl="xla"):
  layout = MultiScaleQuantizer(VOCAB, CODE_DIM, SCALES, rngs=nnx.Rngs(0)).layout
  return NextScaleModel(layout, CODE_DIM, 10, depth=2, dim=32, num_heads=2, class_dropout=0.0, attn_impl=impl,
                        rngs=nnx.Rngs(1))


def _perturbed(model, scale=0.3):
  """VAR's initialisation keeps blocks near the identity (gates ~1e-5); random weights make the tests sharp."""
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  nnx.update(model, jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape)
                                                 for x, k in zip(leaves, keys)]))
  return model


@pytest.fixture(scope="module")
def model():
  return _perturbed(_model())


def _tokens(seed=0, batch=2):
  return jax.random.randint(jax.random.PRNGKey(seed), (batch, sum(p * p for p in SCALES)), 0, VOCAB)


def test_resize_matrices():
  up, down = bicubic_matrix(8, 3), area_matrix(3, 8)
  np.testing.assert_allclose(up.sum(1), 1, atol=1e-6)  # constants stay constant
  np.testing.assert_allclose(down.sum(1), 1, atol=1e-6)
  np.testing.assert_allclose(down[0], [1 / 3] * 3 + [0] * 5, atol=1e-7)  # adaptive pooling windows [0, 3)
  np.testing.assert_allclose(down[1], [0] * 2 + [1 / 4] * 4 + [0] * 2, atol=1e-7)  # [2, 6)
  np.testing.assert_array_equal(bicubic_matrix(5, 5), np.eye(5))


def test_quantizer_encode_embed_and_teacher_inputs_agree(quantizer):
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 5, CODE_DIM))

  @nnx.jit
  def run(q, z):
    zq, tokens, aux = q(z)
    prefixes = [q.embed(tokens, num_maps=k) for k in range(1, len(SCALES) + 1)]
    downs = [q.downsample(prefixes[k - 1], k) for k in range(1, len(SCALES))]
    return zq, tokens, aux["code_hist"], q.indices(z), q.teacher_inputs(tokens), prefixes, downs

  zq, tokens, hist, indices, inputs, prefixes, downs = run(quantizer, z)
  np.testing.assert_array_equal(tokens, indices)
  np.testing.assert_allclose(zq, prefixes[-1], atol=1e-5)  # straight-through value = f_hat of all scales
  np.testing.assert_allclose(inputs, jnp.concatenate([d.reshape(2, -1, CODE_DIM) for d in downs], 1), atol=1e-5)
  assert inputs.shape == (2, tokens.shape[1] - 1, CODE_DIM)
  # Residual quantization: every scale explains part of what the scales before it left.
  errors = [float(jnp.mean(jnp.square(p - z))) for p in prefixes]
  assert errors[-1] < errors[0], errors
  assert hist.sum() == tokens.size


def test_prefix_training_decodes_some_images_from_a_proper_prefix():
  q = MultiScaleQuantizer(VOCAB, CODE_DIM, SCALES, prefix_fraction=0.5, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.PRNGKey(0), (16, 5, 5, CODE_DIM))

  @nnx.jit
  def run(q, z):
    zq, tokens, _ = q(z, train=True, rng=jax.random.PRNGKey(3))
    return zq, [q.embed(tokens, num_maps=k) for k in range(1, len(SCALES) + 1)]

  zq, prefixes = run(q, z)
  used = [min(k for k, p in enumerate(prefixes) if np.allclose(zq[i], p[i], atol=1e-5)) for i in range(16)]
  assert 0 < sum(k < len(SCALES) - 1 for k in used) < 16, used  # some, not all, from a proper prefix


def test_bad_scales_are_named():
  with pytest.raises(ValueError, match="increasing"):
    MultiScaleQuantizer(8, 4, (1, 3, 2), rngs=nnx.Rngs(0))
  config = tiny_config("mnist_var_tok.py", "model.multiscale.scales=(1,2,4)")  # 16 px / 2 = an 8 x 8 latent
  with pytest.raises(ValueError, match="last scale must be the latent"):
    build_tokenizer(config.model, 1, config.data.image_size, nnx.Rngs(0))


@pytest.mark.parametrize("impl,quantizer_class", [("xla", MultiScaleQuantizer), ("pallas", MultiScaleQuantizer),
                                                   ("xla", FrequencyBandQuantizer)])
def test_cached_scale_steps_equal_teacher_forced_logits(impl, quantizer_class):
  """Next-scale and next-frequency (the band quantizer's teacher inputs) share the model's cached steps."""
  quantizer = quantizer_class(VOCAB, CODE_DIM, SCALES, rngs=nnx.Rngs(0))
  model = _perturbed(_model(impl))
  tokens, labels = _tokens(), jnp.asarray([3, 7])

  @nnx.jit
  def run(model, quantizer, tokens, labels):
    inputs = quantizer.teacher_inputs(tokens)
    cond, cache, cached = model.condition(labels), model.init_cache(2), []
    for k, size in enumerate(model.layout.group_sizes):
      start = model.starts[k] - model.starts[1]  # teacher inputs start at scale 1
      x = model.first_inputs(cond) if k == 0 else model.scale_inputs(inputs[:, start:start + size], k)
      logits, cache = model.step(x, k, cache, cond)
      cached.append(logits)
    return model(inputs, labels), jnp.concatenate(cached, axis=1)

  full, cached = run(model, quantizer, tokens, labels)
  np.testing.assert_allclose(cached, full, atol=1e-4, rtol=1e-4)


def test_tokens_of_a_scale_do_not_change_logits_of_earlier_scales(quantizer, model):
  tokens, labels = _tokens(), jnp.asarray([1, 2])
  forward = nnx.jit(lambda model, quantizer, tokens: model(quantizer.teacher_inputs(tokens), labels))
  base = np.asarray(forward(model, quantizer, tokens))
  for k, p in enumerate(SCALES[:-1]):
    start, end = model.starts[k], model.starts[k] + p * p
    changed = tokens.at[:, start:end].set((tokens[:, start:end] + 1 + k) % VOCAB)
    logits = np.asarray(forward(model, quantizer, changed))
    np.testing.assert_array_equal(logits[:, :end], base[:, :end], err_msg=f"scale {k} leaked into scales <= {k}")
    assert np.abs(logits[:, end:] - base[:, end:]).max() > 1e-3, f"scale {k} does not reach later scales"


def test_greedy_sampler_agrees_with_teacher_forcing_and_guidance_off_is_conditional(quantizer, model):
  labels = jnp.asarray([0, 5])

  @nnx.jit
  def run(model, quantizer):
    def sample(**kw):  # the one driver over the next-scale family's step contract
      cfg = SamplingConfig(temperature=0.0, cfg_schedule="linear", **kw)
      return driver.sample(ResidualSteps(model, quantizer), CategoricalHead(cfg), {"label": labels},
                           jax.random.PRNGKey(0), cfg)
    tokens = sample()
    return (tokens, model(quantizer.teacher_inputs(tokens), labels), sample(cfg_scale=4.0),
            sample(cfg_scale=4.0, cfg_interval=(0.0, 0.0)))

  tokens, logits, guided, switched_off = run(model, quantizer)
  np.testing.assert_array_equal(jnp.argmax(logits, -1), tokens)
  np.testing.assert_array_equal(switched_off, tokens)  # guidance on no step == conditional sampling
  assert not np.array_equal(guided, tokens)
  np.testing.assert_array_equal(guided[:, 0], tokens[:, 0])  # the ramp starts at scale 1 (VAR: t = cfg * 0)


@pytest.fixture(scope="module")
def trained_var_tokenizer(tmp_path_factory):
  return train_progressive_tokenizer(str(tmp_path_factory.mktemp("var_tok")), "mnist_var_tok.py", "multiscale")


def test_psnr_rises_with_each_scale_on_heldout_digits(trained_var_tokenizer):
  assert_psnr_rises_with_each_map(trained_var_tokenizer)
  assert os.path.isfile(os.path.join(trained_var_tokenizer, "images", "eval_scales.png"))


@pytest.mark.slow  # ~75 s; the next-scale model, sampler and tokenizer are tested fast above, the CLI by test_cli.py
def test_next_scale_trains_and_samples_through_the_cli(trained_var_tokenizer, tmp_path):
  workdir = str(tmp_path / "var")
  trainer.train(tiny_ar_config("mnist_var.py", trained_var_tokenizer), workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    losses = [json.loads(line)["loss"] for line in f if "loss" in line]
  assert len(losses) == 3 and np.isfinite(losses).all()
  out = str(tmp_path / "samples")
  result = sample_lib.sample(workdir, out, num_images=4, batch_size=4, classes="1,2", seed=0, top_k=5)
  with np.load(os.path.join(out, "samples.npz")) as f:
    assert f["arr_0"].shape == (4, 16, 16, 1) and f["arr_0"].dtype == np.uint8
    np.testing.assert_array_equal(np.sort(f["arr_1"]), [1, 1, 2, 2])  # shuffled order (test_sampling_scale)
  again = str(tmp_path / "again")
  sample_lib.sample(workdir, again, num_images=4, batch_size=4, classes="1,2", seed=0, top_k=5)
  with np.load(os.path.join(out, "samples.npz")) as a, np.load(os.path.join(again, "samples.npz")) as b:
    np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
  assert result["images_per_second"] > 0


def test_next_frequency_task_refuses_a_var_tokenizer(trained_var_tokenizer):
  config = config_lib.load_config(os.path.join(CONFIGS, "mnist_nfig.py"),
                                  ("data.image_size=16", f"frozen.tokenizer={trained_var_tokenizer}"))
  with pytest.raises(ValueError, match="frequency-band tokenizer.*use task next_scale"):
    Run(config)


def test_next_token_task_refuses_a_multiscale_tokenizer(trained_var_tokenizer):
  config = config_lib.load_config(os.path.join(CONFIGS, "mnist_next_token.py"),
                                  ("data.image_size=16", f"frozen.tokenizer={trained_var_tokenizer}"))
  with pytest.raises(ValueError, match="next_scale"):
    Run(config)


def test_attention_at_a_static_position_reads_the_seen_prefix_only_and_gives_the_full_cache_s_output():
  from ar_gen.nn.transformer import Attention  # a static index slices the cache; a traced one reads it all
  attention = Attention(32, 4, 4, qk_l2norm=True, biases=True, attn_impl="xla", rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  k_BKSD, v_BKSD = (jnp.asarray(rng.normal(size=(2, 4, 30, 8)), jnp.float32) for _ in range(2))
  groups_BS = jnp.broadcast_to(jnp.repeat(jnp.arange(3), 10), (2, 30))
  x_BLC = jnp.asarray(rng.normal(size=(2, 10, 32)), jnp.float32)
  q_groups_BL = jnp.ones((2, 10), jnp.int32)
  static, _ = jax.jit(lambda x: attention(x, None, q_groups_BL, (k_BKSD, v_BKSD, groups_BS), 10))(x_BLC)
  traced, _ = jax.jit(lambda x, i: attention(x, None, q_groups_BL, (k_BKSD, v_BKSD, groups_BS), i))(
      x_BLC, jnp.int32(10))
  hlo = jax.jit(lambda x: attention(x, None, q_groups_BL, (k_BKSD, v_BKSD, groups_BS), 10)).lower(x_BLC).as_text()
  assert "2x4x20x8" in hlo  # the slots seen by scale 1 (10 + 10), not the 30 of the cache
  np.testing.assert_allclose(np.asarray(static), np.asarray(traced), rtol=1e-6, atol=1e-6)
