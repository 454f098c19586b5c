"""The training-only parts of the official recipes: dropout and drop-path (nn/layers.py, both models), VAR's AdaLN gate
init, the learning-rate schedules (runs/optim.py) and the tokenizer loss switches (LPIPS, adaptive GAN weight)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from ar_gen.config import ConfigError, base_config
from ar_gen.layout import TokenLayout
from ar_gen.models.next_scale import NextScaleModel
from ar_gen.models.next_token import NextTokenModel
from ar_gen.nn.layers import dropout
from ar_gen.runs import optim
from tokenizers.multiscale import MultiScaleQuantizer
from tokenizers.task import check_lpips

KEY = jax.random.PRNGKey(0)


# ------------------------------------------------------------------------------------------ dropout / drop-path
def test_dropout_drops_at_its_rate_and_keeps_the_mean():
  x = jnp.ones((64, 128, 8))
  y = dropout(x, 0.25, KEY)
  assert abs(float(jnp.mean(y == 0)) - 0.25) < 0.01 and abs(float(jnp.mean(y)) - 1.0) < 0.02
  np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / 0.75], rtol=1e-6)
  np.testing.assert_array_equal(dropout(x, 0.25, None), x)  # no key: evaluation
  np.testing.assert_array_equal(dropout(x, 0.0, KEY), x)


def test_drop_path_drops_whole_examples():
  y = np.asarray(dropout(jnp.ones((256, 7, 3)), 0.5, KEY, per_example=True))
  per_example = y.reshape(256, -1)
  assert np.all(per_example.min(1) == per_example.max(1))  # each example all kept or all dropped
  assert 0.35 < np.mean(per_example[:, 0] == 0) < 0.65


def _next_token(drop):
  return NextTokenModel(TokenLayout.raster((4, 4), 32), 10, depth=2, dim=32, num_heads=2, class_dropout=0.0,
                        dropout=drop, attn_impl="xla", rngs=nnx.Rngs(0))


def test_next_token_dropout_acts_in_training_only():
  tokens, labels = jax.random.randint(KEY, (2, 16), 0, 32), jnp.array([1, 2])
  plain, dropped = _next_token(0.0), _next_token(0.5)
  _, params = nnx.split(plain)
  nnx.update(dropped, jax.tree.map(lambda p: p + 0.05 * jax.random.normal(KEY, p.shape), params))  # output non-zero
  nnx.update(plain, nnx.state(dropped))
  np.testing.assert_array_equal(plain(tokens, labels), dropped(tokens, labels))  # eval: no dropout
  np.testing.assert_array_equal(plain(tokens, labels, train=True, rng=KEY), plain(tokens, labels))
  a, b = dropped(tokens, labels, train=True, rng=KEY), dropped(tokens, labels, train=True, rng=KEY)
  np.testing.assert_array_equal(a, b)  # a key's draws are reproducible
  assert not np.allclose(a, dropped(tokens, labels))


def _next_scale(**kw):
  layout = MultiScaleQuantizer(32, 4, (1, 2, 3), rngs=nnx.Rngs(0)).layout
  return NextScaleModel(layout, 4, 10, depth=3, dim=32, num_heads=2, class_dropout=0.0, attn_impl="xla",
                        rngs=nnx.Rngs(1), **kw)


def test_var_drop_path_rises_linearly_over_the_blocks():
  model = _next_scale(drop_path=0.3)
  assert [block.drop_path for block in model.transformer.layers] == pytest.approx([0.0, 0.15, 0.3])


def test_var_adaln_gate_init_scales_the_gate_columns_only():
  low, high = _next_scale(adaln_gate_init=1e-5), _next_scale(adaln_gate_init=1e-3)
  dim = 32
  k_low, k_high = (np.asarray(m.transformer.layers[0].ada_lin.kernel[...]) for m in (low, high))
  np.testing.assert_allclose(k_high[:, :2 * dim], 100 * k_low[:, :2 * dim], rtol=1e-5)  # gate1, gate2
  np.testing.assert_array_equal(k_high[:, 2 * dim:], k_low[:, 2 * dim:])  # scales and shifts


# ------------------------------------------------------------------------------------------ schedules
def _opt(**kw) -> ml_collections.ConfigDict:
  opt = base_config().optimizer
  opt.update(kw)
  return opt


def test_cosine_without_hold_is_the_warmup_cosine_schedule():
  new = optim.schedule(_opt(lr=1e-3, warmup_steps=10, end_lr_factor=0.1), 100)
  old = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100, 1e-4)
  np.testing.assert_allclose([new(i) for i in range(110)], [old(i) for i in range(110)], rtol=1e-6)


def test_linear_with_hold_is_vars_lin0():
  total, warmup, wpe = 1000, 20, 0.1
  sched = optim.schedule(_opt(lr=1.0, warmup_steps=warmup, schedule="linear", hold_fraction=0.05,
                              end_lr_factor=wpe), total)

  def var_lin0(it):  # VAR's utils/lr_control.py:10-28 after warmup, restated
    passed = (it - warmup) / (total - 1 - warmup)
    return 1.0 if passed < 0.05 else wpe + (1 - wpe) * (1 - passed) / 0.95

  steps = range(warmup, total)
  np.testing.assert_allclose([sched(i) for i in steps], [var_lin0(i) for i in steps], atol=2e-3)
  assert float(sched(total)) == pytest.approx(wpe) and float(sched(warmup // 2)) == pytest.approx(0.5)


def test_constant_rate_without_warmup():
  sched = optim.schedule(_opt(lr=1e-4, warmup_steps=0, end_lr_factor=1.0), 50)
  np.testing.assert_allclose([sched(i) for i in range(60)], 1e-4, rtol=1e-6)


def test_unknown_schedule_is_named():
  with pytest.raises(ValueError, match="optimizer.schedule must be one of"):
    optim.schedule(_opt(schedule="lin0"), 10)


# ------------------------------------------------------------------------------------------ tokenizer loss switches
def test_lpips_weight_and_file_must_agree():
  loss = ml_collections.ConfigDict(dict(lpips_weight=1.0, lpips_path=""))
  with pytest.raises(ConfigError, match="ar-gen convert-lpips"):
    check_lpips(loss)
  with pytest.raises(ConfigError, match="lpips_weight"):
    check_lpips(ml_collections.ConfigDict(dict(lpips_weight=0.0, lpips_path="lpips.npz")))
  assert check_lpips(ml_collections.ConfigDict(dict(lpips_weight=1.0, lpips_path="lpips.npz"))) == "lpips.npz"


@pytest.mark.slow  # ~50 s on 2 cores (two tokenizer steps with a discriminator); `make test-all`
def test_fixed_gan_weight_when_adaptive_weight_is_off():
  from ar_gen.runs.run import Run  # pylint: disable=g-import-not-at-top
  from ar_gen.train import trainer  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  batch = {"image": jax.random.uniform(KEY, (8, 16, 16, 1), minval=-1, maxval=1), "label": np.zeros(8, np.int32)}
  weights = []
  for adaptive in (True, False):
    run = Run(tiny_config("mnist_vq.py", "loss.disc_weight=0.5", "loss.disc_start=0", "loss.disc_channels=8",
                          f"loss.disc_adaptive_weight={adaptive}"))
    _, metrics = jax.jit(trainer.make_step(run))(jax.jit(run.init)(KEY), batch)
    weights.append(float(metrics["adaptive_weight"]))
  assert weights[1] == 1.0 and weights[0] != 1.0
