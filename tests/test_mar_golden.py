"""MAR's official code (LTH14/mar fe470ac) against ar-gen on a tiny random-weight config (golden fixture).

`tests/fixtures/mar_tiny.npz` holds numbers only: the official model's weights (MAR with 2 + 2 ViT blocks of width
32, a 4-slot class buffer, a 4 x 4 grid of 4-float tokens, a 2-block denoising MLP of width 32), inputs, and the
outputs of the official functions (encoder and decoder, SimpleMLPAdaLN with and without guidance, the respaced
cosine schedules, one reverse step of `p_sample` with fixed noise, the training loss), made with torch 2.14 CPU by a
script outside the repository.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ar_gen.convert import common, mar as mar_convert
from ar_gen.layout import TokenLayout
from ar_gen.models.mar import MARModel
from ar_gen.nn.diffusion import GaussianDiffusion
from tests import golden

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def fixture():
  return golden.load("mar_tiny.npz")


@pytest.fixture(scope="module")
def model(fixture):
  layout = TokenLayout.raster((4, 4), kind="vectors", token_dim=4)
  m = MARModel(layout, 10, 2, 32, 2, decoder_depth=2, buffer_size=4, head_depth=2, head_width=32, rngs=nnx.Rngs(0))
  return common.load_params(m, mar_convert.mar_params(golden.state_dict(fixture, "mar")), "mar_tiny.npz")


def test_encoder_and_decoder_outputs_match(fixture, model):
  tokens, mask = jnp.asarray(fixture["mar_in/tokens"]), jnp.asarray(fixture["mar_in/mask"])
  labels = jnp.asarray(fixture["mar_in/labels"], jnp.int32)
  encoded = model.encode(tokens, mask, model.class_embedding(labels), capacity=16)
  kept = np.concatenate([np.ones((2, 4), bool), fixture["mar_in/mask"] == 0], axis=1)
  np.testing.assert_allclose(np.asarray(encoded)[kept].reshape(2, -1, 32), fixture["mar_out/encoder_out"], **TOL)
  np.testing.assert_allclose(model(tokens, mask, labels), fixture["mar_out/z"], **TOL)
  null = jnp.full_like(labels, 10)  # the null class: MAR's fake latent
  np.testing.assert_allclose(model(tokens, mask, null), fixture["mar_out/z_null"], **TOL)


def test_denoiser_outputs_match_with_and_without_guidance(fixture, model):
  out = model.head(jnp.asarray(fixture["head_in/x_t"]), jnp.asarray(fixture["head_in/t"]),
                   jnp.asarray(fixture["head_in/c"]))
  np.testing.assert_allclose(out, fixture["head_out/model_output"], **TOL)
  x, t, c = (jnp.asarray(fixture[f"head_in/cfg_{k}"]) for k in ("x", "t", "c"))
  n = x.shape[0] // 2
  guided = model.head.guided(x[:n], t[:n], c[:n], c[n:], jnp.float32(fixture["head_in/cfg_scale"]))
  np.testing.assert_allclose(guided, fixture["head_out/cfg_model_output"][:n], **TOL)


@pytest.mark.parametrize("spacing", ["1000", "100", "10"])
def test_the_respaced_schedules_equal_the_official_ones(fixture, spacing):
  diffusion = GaussianDiffusion.cosine(1000).respaced(spacing)
  np.testing.assert_array_equal(diffusion.timestep_map, fixture[f"schedule{spacing}/timestep_map"])
  for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
               "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
               "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "log_betas"):
    np.testing.assert_allclose(getattr(diffusion, name).astype(np.float32), fixture[f"schedule{spacing}/{name}"],
                               rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("which", ["t7", "t0", "tmix"])
def test_one_reverse_step_with_fixed_noise_matches(fixture, model, which):
  diffusion = GaussianDiffusion.cosine(1000).respaced("10")
  x, t = jnp.asarray(fixture["step_in/x"]), jnp.asarray(fixture[f"step_in/{which}"], jnp.int32)
  out = model.head(x, diffusion.model_timesteps(t), jnp.asarray(fixture["head_in/c"]))
  moments = diffusion.p_mean_variance(out, x, t)
  scale = dict(rtol=1e-4, atol=1e-4 * float(np.abs(fixture[f"step_out/{which}_pred_xstart"]).max()))
  np.testing.assert_allclose(moments["pred_x0"], fixture[f"step_out/{which}_pred_xstart"], **scale)
  np.testing.assert_allclose(moments["mean"], fixture[f"step_out/{which}_mean"], **scale)
  np.testing.assert_allclose(moments["log_variance"], fixture[f"step_out/{which}_log_variance"], **TOL)
  x_prev = diffusion.p_sample(out, x, t, jnp.asarray(fixture["step_in/noise"]), float(fixture["step_in/temperature"]))
  np.testing.assert_allclose(x_prev, fixture[f"step_out/x_prev_{which}"], **scale)


def test_the_training_loss_matches(fixture, model):
  diffusion = GaussianDiffusion.cosine(1000)
  c = jnp.asarray(fixture["loss_in/c"])
  loss = diffusion.training_loss(lambda x, t: model.head(x, t, c), jnp.asarray(fixture["loss_in/x_start"]),
                                 jnp.asarray(fixture["loss_in/t"], jnp.int32), jnp.asarray(fixture["loss_in/noise"]))
  np.testing.assert_allclose(loss, fixture["loss_out/loss"], rtol=1e-4, atol=1e-5)


def test_the_kl16_reader_reproduces_the_official_vae(fixture):
  """A tiny LDM autoencoder (ch 32, ch_mult (1, 2), 1 block per level, z 4, attention in the encoder's lowest level
  and both middle blocks, as kl16) through `vae_params`: moments, posterior, KL and decoding of the mean."""
  from tokenizers.config import tokenizer_config
  from tokenizers.model import build_tokenizer
  m = tokenizer_config("kl").model
  m.update(channels=32, channel_mult=(1, 2), num_res_blocks=1, z_channels=4, attention=True,
           decoder_level_attention=False)
  m.kl.update(embed_dim=4, scale_factor=1.0)
  tokenizer = common.load_params(build_tokenizer(m, 3, 16, nnx.Rngs(0)),
                                 mar_convert.vae_params(golden.state_dict(fixture, "vae")), "mar_tiny.npz")
  nchw = lambda x: np.transpose(np.asarray(x), (0, 3, 1, 2))
  images = jnp.asarray(np.transpose(fixture["vae_in/images"], (0, 2, 3, 1)))
  moments = tokenizer.project(images)
  np.testing.assert_allclose(nchw(moments), fixture["vae_out/moments"], **TOL)
  mean, logvar = tokenizer.quantizer.moments(moments)
  np.testing.assert_allclose(nchw(mean), fixture["vae_out/mean"], **TOL)
  np.testing.assert_allclose(nchw(logvar), fixture["vae_out/logvar"], **TOL)
  from tokenizers.kl import kl_divergence
  np.testing.assert_allclose(kl_divergence(mean, logvar), fixture["vae_out/kl"], rtol=1e-4)
  decoded = tokenizer.decode(tokenizer.encode(images))  # tokens are the means (scale 1 here)
  np.testing.assert_allclose(nchw(decoded), fixture["vae_out/decoded"], **TOL)


def test_converted_work_directories_sample_and_a_wrong_size_is_named(fixture, tmp_path):
  """The fixture's state dicts through `convert_state_dicts` (what `ar-gen convert-mar` does after reading the
  files): the MAR work directory restores with the official weights and its z matches; --size L is refused."""
  from ar_gen.runs.run import restore_run
  vae_sd, mar_sd = golden.state_dict(fixture, "vae"), golden.state_dict(fixture, "mar")
  mar_sd_named = dict(mar_sd)
  with pytest.raises(ValueError, match="no MAR size\\), not --size L"):
    mar_convert.convert_state_dicts(vae_sd, mar_sd_named, "L", str(tmp_path / "bad"), image_size=8)
  assert not (tmp_path / "bad").exists()
  from ar_gen.models import mar as mar_models
  tiny = (2, 32, 2, 2, 32)  # the fixture's sizes as a preset, for this test only
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(mar_models.PRESETS, "B", tiny)
    out = mar_convert.convert_state_dicts(vae_sd, mar_sd, "B", str(tmp_path / "out"), image_size=8)
    run, state, _ = restore_run(out["mar"])
    model = run.model(state)
  tokens, mask = jnp.asarray(fixture["mar_in/tokens"]), jnp.asarray(fixture["mar_in/mask"])
  z = model(tokens, mask, jnp.asarray(fixture["mar_in/labels"], jnp.int32))
  np.testing.assert_allclose(z, fixture["mar_out/z"], **TOL)
