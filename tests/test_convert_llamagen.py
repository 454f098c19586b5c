"""LlamaGen weights through the converter reproduce the official code's outputs (golden fixture).

`tests/fixtures/llamagen_tiny.npz` holds numbers only: the random weights of a tiny VQ (ch 32, ch_mult (1, 2),
64 codes of 8 dims) and a tiny c2i GPT (2 layers, dim 64, 4 heads, 4x4 grid, 64 codes, 10 classes),
inputs, and the official LlamaGen code's outputs on them (CPU, fp32): pre-quantization features, code indices,
images decoded from the indices, teacher-forced logits and greedy tokens with guidance scale 2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ar_gen.convert import common, llamagen
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.decoding import driver
from ar_gen.decoding.heads import CategoricalHead
from ar_gen.layout import TokenLayout
from ar_gen.models.next_token import NextTokenModel
from tests import golden
from tokenizers.config import tokenizer_config
from tokenizers.model import build_tokenizer


@pytest.fixture(scope="module")
def fixture():
  return golden.load("llamagen_tiny.npz")


@pytest.fixture(scope="module")
def tokenizer(fixture):
  sd = golden.state_dict(fixture, "vq")
  m = tokenizer_config("vq").model
  m.update(llamagen.vq_model_config(sd))
  assert (m.channels, tuple(m.channel_mult), m.num_res_blocks, m.vq.codebook_size) == (32, (1, 2), 1, 64)
  image_size = fixture["vq_in/images"].shape[1]
  return common.load_params(build_tokenizer(m, 3, image_size, nnx.Rngs(0)), llamagen.vq_params(sd), "fixture")


def test_vq_features_indices_and_decoding_match(fixture, tokenizer):
  x = jnp.asarray(fixture["vq_in/images"])
  np.testing.assert_allclose(tokenizer.project(x), fixture["vq_out/features"], rtol=1e-4, atol=1e-4)
  indices = fixture["vq_out/indices"]  # [B, h, w]; ar-gen's tokens are the layout's sequence [B, L]
  np.testing.assert_array_equal(tokenizer.encode(x), indices.reshape(len(indices), -1))
  decoded = tokenizer.decode(jnp.asarray(indices.reshape(len(indices), -1)))
  np.testing.assert_allclose(decoded, fixture["vq_out/decoded"], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def gpt(fixture):
  model = NextTokenModel(TokenLayout.raster((4, 4), 64), 10, depth=2, dim=64, num_heads=4, num_kv_heads=4,
                         mlp_hidden=256,
                         class_dropout=0.0, rngs=nnx.Rngs(0))
  return common.load_params(model, llamagen.gpt_params(golden.state_dict(fixture, "gpt")), "fixture")


def test_gpt_logits_match(fixture, gpt):
  logits = gpt(jnp.asarray(fixture["gpt_in/tokens"]), jnp.asarray(fixture["gpt_in/labels"]))
  np.testing.assert_allclose(logits, fixture["gpt_out/logits"], rtol=1e-4, atol=1e-4)


def test_gpt_greedy_guided_sampling_matches(fixture, gpt):
  cfg = SamplingConfig(temperature=0.0, cfg_scale=2.0)
  tokens = driver.sample(gpt, CategoricalHead(cfg), {"label": jnp.asarray(fixture["gpt_in/labels"])},
                         jax.random.PRNGKey(0), cfg)
  np.testing.assert_array_equal(tokens, fixture["gpt_out/greedy_cfg2"])


def test_shape_mismatch_is_named(fixture):
  model = NextTokenModel(TokenLayout.raster((4, 4), 64), 10, depth=2, dim=64, num_heads=4, num_kv_heads=4,
                         mlp_hidden=128,
                         class_dropout=0.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="c2i_test.pt.*w1"):
    common.load_params(model, llamagen.gpt_params(golden.state_dict(fixture, "gpt")), "c2i_test.pt")
