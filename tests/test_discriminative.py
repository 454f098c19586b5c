"""Discriminative tokens (DiGIT): the SSL encoder trains, fit-kmeans makes an encode-only tokenizer whose ids are the
brute-force nearest centroids, extract-tokens works on it, the pixel decoder's prefix never sees the VQ tokens and
gets no loss, the AR variant decodes cached as in one pass, MaskGIT's counts follow the cosine law, the stages
train and sample end to end, and bad input is named."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from ar_gen import config as config_lib
from ar_gen.commands import extract_tokens, fit_kmeans
from ar_gen.config import ConfigError
from ar_gen.data import pipeline
from ar_gen.data.preprocess import to_uint8
from ar_gen.decoding import maskgit
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.errors import UserError
from ar_gen.eval import evaluators
from ar_gen.families.discriminative import pixel_loss
from ar_gen.layout import TokenLayout
from ar_gen.models.pixel_decoder import PixelDecoder
from ar_gen.runs import frozen as frozen_lib
from ar_gen.runs import run as run_lib
from tests.conftest import CONFIGS, tiny_ar_config

K = 8
ENCODER = ("data.image_size=16", "data.num_threads=1", "log_every_steps=1", "vis_every_steps=3",
           "encoder.input_size=16", "encoder.dim=32", "encoder.depth=2", "encoder.num_heads=2", "encoder.layer=-1",
           "ssl.proj_dim=16", "batch_size=16", "total_steps=3", "ckpt_every_steps=3")


@pytest.fixture(scope="module")
def ssl_workdir(tmp_path_factory):
  from ar_gen.train import trainer
  workdir = str(tmp_path_factory.mktemp("ssl"))
  metrics = trainer.train(config_lib.load_config(os.path.join(CONFIGS, "mnist_ssl_encoder.py"), ENCODER), workdir)
  assert np.isfinite(metrics["loss"]) and 0 <= metrics["pair_accuracy"] <= 1
  return workdir


@pytest.fixture(scope="module")
def digit_workdir(ssl_workdir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("digit") / "tok")
  result = fit_kmeans.fit(ssl_workdir, "bundled:mnist:train", K, out, examples=64, iters=5)
  assert result["k"] == K and result["vectors"] == 64 * 16
  return out


def test_ids_are_the_nearest_centroid_of_each_patch_feature(ssl_workdir, digit_workdir):
  tok = frozen_lib.load("tokenizer", digit_workdir)
  module = tok.module()
  assert tok.layout == TokenLayout.raster((4, 4), K) and tok.config.kmeans.source.step == 3
  images = jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 16, 1), minval=-1, maxval=1)
  f = np.asarray(module.features(images), np.float64).reshape(-1, 32)
  c = np.asarray(module.centroids[...], np.float64)
  brute = np.argmin(((f[:, None, :] - c[None]) ** 2).sum(-1), axis=1).reshape(3, 16)
  np.testing.assert_array_equal(np.asarray(module.encode(images)), brute)
  encoder = frozen_lib.load("encoder", ssl_workdir).module()  # the copy is the encoder's weights, at its layer
  np.testing.assert_allclose(module.features(images), encoder.features(images, -1), atol=1e-6)


def test_extract_tokens_works_on_the_discriminative_tokenizer(digit_workdir, tmp_path):
  meta = extract_tokens.extract(digit_workdir, "bundled:mnist:test", str(tmp_path / "ids"))
  assert TokenLayout.from_json(meta["layout"]) == TokenLayout.raster((4, 4), K) and meta["num_examples"] > 0


def test_given_centroids_are_used_and_a_wrong_dimension_or_layer_is_named(ssl_workdir, tmp_path):
  good = np.random.default_rng(0).normal(size=(5, 32)).astype(np.float32)
  np.save(tmp_path / "good.npy", good)
  out = str(tmp_path / "given")
  assert fit_kmeans.fit(ssl_workdir, "bundled:mnist:train", 0, out, examples=8,
                        centroids=str(tmp_path / "good.npy"))["k"] == 5
  np.testing.assert_array_equal(frozen_lib.load("tokenizer", out).module().centroids[...], good)
  np.save(tmp_path / "bad.npy", good[:, :31])
  with pytest.raises(UserError, match=r"shape \[5, 31\]; the encoder .* dimension 32, so the centroids must be "
                                      r"\[K, 32\]"):
    fit_kmeans.fit(ssl_workdir, "bundled:mnist:train", 0, str(tmp_path / "x"), centroids=str(tmp_path / "bad.npy"))
  with pytest.raises(ConfigError, match="encoder.layer=2: the encoder has 2 blocks"):
    fit_kmeans.fit(ssl_workdir, "bundled:mnist:train", K, str(tmp_path / "y"), layer=2)
  with pytest.raises(UserError, match="holds a 'discriminative_tokenizer' run; fit-kmeans clusters the features"):
    fit_kmeans.fit(out, "bundled:mnist:train", K, str(tmp_path / "z"))
  assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _decoder(variant):
  model = PixelDecoder(TokenLayout.raster((4, 4), 11), TokenLayout.raster((2, 2), 5), variant, 2, 32, 2,
                       rngs=nnx.Rngs(0))
  model.output.kernel[...] = jax.random.normal(jax.random.PRNGKey(3), model.output.kernel.shape)
  return model


@pytest.mark.parametrize("variant", ["ar", "maskgit"])
def test_the_prefix_never_sees_the_vq_tokens_and_gets_no_loss(variant):
  model = _decoder(variant)
  ids = jax.random.randint(jax.random.PRNGKey(1), (2, 4), 0, 5)
  a, b = (jax.random.randint(jax.random.PRNGKey(s), (2, 16), 0, 11) for s in (2, 3))
  la, lb = model.sequence_logits(ids, a), model.sequence_logits(ids, b)
  np.testing.assert_allclose(la[:, :4], lb[:, :4], atol=1e-6)  # the prefix's outputs ignore every VQ token
  assert np.abs(la[:, 4:] - lb[:, 4:]).max() > 1e-3
  other_ids = (ids + 1) % 5
  assert np.abs(model(other_ids, a) - model(ids, a)).max() > 1e-3  # the VQ part reads the ids
  weights = jnp.ones((2, 16), bool)
  grad = jax.grad(lambda logits: pixel_loss(logits, a, weights, 4)[0])(la)
  assert np.all(np.asarray(grad[:, :4]) == 0) and np.abs(grad[:, 4:]).max() > 0


def test_the_ar_pixel_decoder_decodes_cached_as_in_one_pass():
  model = _decoder("ar")
  ids = jax.random.randint(jax.random.PRNGKey(1), (2, 4), 0, 5)
  tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 16), 0, 11)
  graphdef, state = nnx.split(model)

  @jax.jit
  def step(state, carry, index, cache, token_B1):
    m = nnx.merge(graphdef, state)
    logits, cache = m.step(carry, index, cache)
    return logits[:, 0], cache, m.feed(token_B1, index, carry)

  _, carry, cache = model.begin({"ids": ids})
  cached = []
  for i in range(16):
    logits, cache, carry = step(state, carry, jnp.int32(i), cache, tokens[:, i:i + 1])
    cached.append(logits)
  np.testing.assert_allclose(jnp.stack(cached, 1), model(ids, tokens), atol=1e-4, rtol=0)


def test_maskgit_counts_follow_the_cosine_law():
  for n, steps in ((256, 8), (64, 8), (100, 12)):
    counts = maskgit.mask_counts(n, steps)
    law = [math.floor(n * math.cos(math.pi / 2 * t / steps)) for t in range(steps + 1)]
    assert counts.tolist() == law[:-1] + [0]
  model = _decoder("maskgit")
  ids = jax.random.randint(jax.random.PRNGKey(1), (3, 4), 0, 5)
  tokens, masked = jax.jit(lambda r: maskgit.sample(lambda t: model(ids, t), 3, 16, model.mask_id, 8, r,
                                                    SamplingConfig(), trace=True))(jax.random.PRNGKey(0))
  expected = maskgit.mask_counts(16, 8)[1:]
  np.testing.assert_array_equal(np.asarray(masked), np.broadcast_to(expected[:, None], (8, 3)))
  assert int(tokens.max()) < 11
  mask = maskgit.training_mask(jax.random.PRNGKey(5), 4000, 16)
  share = np.asarray(mask).mean(axis=1)
  assert share.min() >= 1 / 16 and abs(share.mean() - (2 / np.pi + 0.5 / 16)) < 0.02  # E ceil(16 cos(pi u / 2)) / 16


@pytest.fixture(scope="module")
def stage1_workdir(digit_workdir, tmp_path_factory):
  from ar_gen.train import trainer
  ids = str(tmp_path_factory.mktemp("digit_ids") / "ids")
  extract_tokens.extract(digit_workdir, "bundled:mnist:train", ids)
  workdir = str(tmp_path_factory.mktemp("digit_stage1"))
  config = tiny_ar_config("mnist_digit_stage1.py", digit_workdir, f"data.train=tokens:{ids}")
  assert config.model.label_smoothing == 0.1
  trainer.train(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def judge_workdir(tmp_path_factory):
  """A classifier of 16 px digits (3 steps: only its predictions on the reconstructions matter here)."""
  from ar_gen.train import trainer
  workdir = str(tmp_path_factory.mktemp("judge"))
  trainer.train(config_lib.load_config(os.path.join(CONFIGS, "mnist_classifier.py"),
                                       ["data.image_size=16", "data.num_threads=1", "total_steps=3"]), workdir)
  return workdir


def _stage2(vq, ids, stage1, *overrides):
  return tiny_ar_config("mnist_digit.py", vq, f"frozen.ids={ids}", f"frozen.stage1={stage1}",
                        "evals.reconstruction.num_images=16", "evals.reconstruction.batch_size=8", *overrides)


# MaskGIT end to end is slow (~70 s); its schedule, prefix isolation and sampler counts are tested fast above
@pytest.mark.parametrize("variant", ["ar", pytest.param("maskgit", marks=pytest.mark.slow)])
def test_both_stages_train_reconstruct_and_sample(trained_vq_workdir, digit_workdir, stage1_workdir, judge_workdir,
                                                  variant, tmp_path):
  from ar_gen.commands import sample
  from ar_gen.train import metrics_log, trainer
  stage2 = str(tmp_path / "stage2")
  metrics = trainer.train(_stage2(trained_vq_workdir, digit_workdir, stage1_workdir, f"model.variant={variant}",
                                  f"evals.reconstruction.features=classifier:{judge_workdir}"), stage2)
  assert np.isfinite(metrics["loss"])
  row = [r for r in metrics_log.read_metrics(stage2) if "reconstruction/psnr" in r][-1]
  assert 0 < row["reconstruction/psnr"] < 60 and row["reconstruction/tokenizer_psnr"] > 0
  # the grid: the first 10 held-out digits over their reconstructions, each 16 px tile enlarged 4x, 2 px apart
  grid = np.asarray(Image.open(os.path.join(stage2, "evals", "reconstruction_0000003", "grid.png")))
  assert grid.shape[:2] == (2 * 66 + 2, 10 * 66 + 2)
  config = config_lib.load_workdir_config(stage2)
  real = next(pipeline.eval_batches(config.data, 10))["image"]
  np.testing.assert_array_equal(grid[2:66, 2:66], to_uint8(np.asarray(real[0])).repeat(4, 0).repeat(4, 1)[..., 0])
  assert not np.array_equal(grid[2:66, 2:66], grid[68:132, 2:66])  # the first digit over its reconstruction
  assert 0 <= row["reconstruction/accuracy"] <= 1
  result = sample.sample(stage2, str(tmp_path / "samples"), num_images=4, batch_size=4)
  images = np.load(tmp_path / "samples" / "samples.npz")["arr_0"]
  assert result["num_images"] == 4 and images.shape == (4, 16, 16, 1) and images.std() > 0


def test_bad_stage_two_inputs_are_named(trained_vq_workdir, digit_workdir, stage1_workdir, tmp_path):
  missing = str(tmp_path / "no_vq")
  with pytest.raises(FileNotFoundError, match=f"frozen.tokenizer='{missing}': no config.json there"):
    run_lib.Run(_stage2(missing, digit_workdir, stage1_workdir))
  with pytest.raises(ConfigError, match="needs frozen.tokenizer to be the VQ tokenizer .* goes in frozen.ids"):
    run_lib.Run(_stage2(digit_workdir, digit_workdir, stage1_workdir))
  with pytest.raises(ConfigError, match="frozen.ids=.* holds a 'tokenizer' run; it must be a discriminative"):
    run_lib.Run(_stage2(trained_vq_workdir, trained_vq_workdir, ""))
  with pytest.raises(ConfigError, match="generates the discriminative ids of .* both stages must use the same"):
    run_lib.Run(_stage2(trained_vq_workdir, _other_tokenizer(digit_workdir, tmp_path), stage1_workdir))
  config = _stage2(trained_vq_workdir, digit_workdir, stage1_workdir, f"evals.reconstruction.features=classifier:{missing}")
  with pytest.raises(FileNotFoundError, match=f"evals.reconstruction.features='classifier:{missing}': .* not a trained"):
    evaluators.from_config(config, str(tmp_path / "run"))
  config = _stage2(trained_vq_workdir, digit_workdir, stage1_workdir, "evals.reconstruction.features=inception")
  with pytest.raises(ValueError, match="evals.reconstruction.features='inception': classifier:DIR"):
    evaluators.from_config(config, str(tmp_path / "run"))


def _other_tokenizer(digit_workdir, tmp_path):
  """Another discriminative tokenizer (refitted with another seed)."""
  config = frozen_lib.load("tokenizer", digit_workdir).config
  out = str(tmp_path / "other")
  fit_kmeans.fit(config.kmeans.source.workdir, "bundled:mnist:train", K, out, examples=32, iters=2, seed=1)
  return out
