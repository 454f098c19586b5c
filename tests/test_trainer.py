"""The trainer: exact resume, metrics and pictures on disk, EMA, the GAN path, eval-tokenizer, NaN guard."""

import json
import os

import jax
import numpy as np
import pytest

from ar_gen.eval import tokenizer_eval
from ar_gen.runs.run import Run, restore_run
from ar_gen.train import metrics_log, trainer
from tests.conftest import tiny_config


def _params(workdir):
  _, state, step = restore_run(workdir, full=True)
  return jax.device_get(state["params"]), jax.device_get(state["ema"]), step


def test_stopped_and_restarted_run_continues_bitwise(tmp_path):
  overrides = ("total_steps=6", "ckpt_every_steps=3", "ema_decay=0.9")
  whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
  trainer.train(tiny_config("mnist_vq.py", *overrides), whole)
  trainer.train(tiny_config("mnist_vq.py", *overrides), split, stop_after_steps=4)
  with open(os.path.join(split, "metrics.jsonl"), "a") as f:  # a line past the last checkpoint, as after a crash
    f.write(json.dumps({"step": 5, "loss": 123.0}) + "\n")
  trainer.train(tiny_config("mnist_vq.py", *overrides), split)  # resumes from the checkpoint at step 4

  (p1, e1, s1), (p2, e2, s2) = _params(whole), _params(split)
  assert s1 == s2 == 6
  for a, b in zip(jax.tree.leaves((p1, e1)), jax.tree.leaves((p2, e2))):
    np.testing.assert_array_equal(a, b)
  m1, m2 = metrics_log.read_metrics(whole), metrics_log.read_metrics(split)
  assert [m["step"] for m in m2] == list(range(1, 7))
  assert [m["loss"] for m in m1] == [m["loss"] for m in m2]


def test_workdir_has_the_contract_files(trained_vq_workdir):
  names = set(os.listdir(trained_vq_workdir))
  assert {"config.json", "metrics.jsonl", "checkpoints", "tb"} <= names
  records = metrics_log.read_metrics(trained_vq_workdir)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert {"loss", "psnr", "codebook_usage", "perplexity", "lr", "grad_norm"} <= set(records[0])
  assert os.listdir(os.path.join(trained_vq_workdir, "tb"))
  assert os.path.exists(os.path.join(trained_vq_workdir, "images", "recon_0000003.png"))


def test_eval_tokenizer_writes_eval_json(trained_vq_workdir):
  result = tokenizer_eval.evaluate(trained_vq_workdir, max_examples=40, batch_size=16)
  on_disk = json.load(open(os.path.join(trained_vq_workdir, "eval.json")))
  assert on_disk == result and result["num_examples"] == 40 and result["step"] == 4
  assert 0 < result["codebook_usage"] <= 1 and 0 < result["ssim"] <= 1 and result["psnr"] > 0
  assert os.path.exists(os.path.join(trained_vq_workdir, "images", "eval_recon.png"))


@pytest.mark.slow  # ~70 s on 2 cores; `make test-all`
def test_gan_losses_train_both_parts(tmp_path):
  config = tiny_config("mnist_lfq.py", "total_steps=2", "loss.disc_weight=0.5", "loss.disc_start=0",
                       "loss.disc_channels=4", "loss.disc_layers=2", "loss.ms_ssim_weight=0.1")
  run = Run(config)
  state = jax.jit(run.init)(jax.random.PRNGKey(0))
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (8, 16, 16, 1), minval=-1, maxval=1),
           "label": np.zeros(8, np.int32)}
  step = jax.jit(trainer.make_step(run))
  new_state, metrics = step(*step(state, batch)[:1], batch)  # the second step: the first has lr = 0 (warmup)
  for key in ("d_loss", "g_loss", "adaptive_weight"):
    assert np.isfinite(float(metrics[key]))
  for part in ("tokenizer", "discriminator"):
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state["params"][part]),
                                                      jax.tree.leaves(new_state["params"][part]))]
    assert any(moved), part


@pytest.mark.slow  # the default run has tests/test_distributed.py's NaN test (step named, last good checkpoint kept)
def test_nan_loss_stops_with_the_step_named(tmp_path):
  config = tiny_config("mnist_vq.py", "total_steps=2", "optimizer.lr=nan")
  with pytest.raises(FloatingPointError, match="step"):
    trainer.train(config, str(tmp_path))


def test_gradient_accumulation_2x8_equals_batch_16(trained_vq_workdir, tmp_path):
  from tests.conftest import tiny_ar_config  # pylint: disable=g-import-not-at-top
  runs = {}
  for accum in (1, 2):
    workdir = str(tmp_path / f"accum{accum}")
    trainer.train(tiny_ar_config("mnist_next_token.py", trained_vq_workdir, "batch_size=16", "vis_every_steps=0",
                                 "model.class_dropout=0.0", "model.token_dropout=0.0",
                                 f"grad_accum_steps={accum}"), workdir)
    records = metrics_log.read_metrics(workdir)
    runs[accum] = ([(m["loss"], m["grad_norm"]) for m in records], _params(workdir)[0])
  (loss1, params1), (loss2, params2) = runs[1], runs[2]
  assert len(loss1) == 3
  np.testing.assert_allclose(loss2, loss1, rtol=1e-5)  # gradient norms too: Adam alone would hide a scale error
  for a, b in zip(jax.tree.leaves(params1), jax.tree.leaves(params2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # the default run has the AR model's accumulation test above
def test_gradient_accumulation_2x8_equals_batch_16_for_a_vq_tokenizer(tmp_path):
  """A tokenizer's array metrics (code histograms, summed) and extras (encoder outputs, joined) combine too."""
  runs = []
  for accum in (1, 2):
    workdir = str(tmp_path / f"accum{accum}")
    trainer.train(tiny_config("mnist_vq.py", "batch_size=16", "total_steps=3", "vis_every_steps=0",
                              f"grad_accum_steps={accum}"), workdir)
    runs.append([(m["loss"], m["grad_norm"], m["codebook_usage"], m["perplexity"])
                 for m in metrics_log.read_metrics(workdir)])
  assert len(runs[0]) == 3
  np.testing.assert_allclose(runs[1], runs[0], rtol=1e-5)


def test_grad_accum_steps_must_divide_the_batch():
  from ar_gen import config as config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(config_lib.ConfigError, match="multiple of grad_accum_steps"):
    tiny_config("mnist_vq.py", "grad_accum_steps=3")


def test_bf16_compute_keeps_float32_weights_ema_and_optimizer_state(trained_vq_workdir, tmp_path):
  from tests.conftest import tiny_ar_config  # pylint: disable=g-import-not-at-top
  losses, states = {}, {}
  for name in ("float32", "bfloat16"):
    workdir = str(tmp_path / name)
    trainer.train(tiny_ar_config("mnist_next_token.py", trained_vq_workdir, f"model.dtype={name}",
                                 "ema_decay=0.99", "vis_every_steps=0"), workdir)
    losses[name] = [m["loss"] for m in metrics_log.read_metrics(workdir)]
    states[name] = restore_run(workdir, full=True)[1]
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=2e-2)  # the same model, coarser sums
  assert losses["bfloat16"] != losses["float32"]  # bf16 was in effect
  for part in ("params", "ema", "opt_state"):
    assert {leaf.dtype for leaf in jax.tree.leaves(states["bfloat16"][part])} <= {np.dtype("float32"),
                                                                                   np.dtype("int32")}, part
