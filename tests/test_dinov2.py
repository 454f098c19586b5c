"""The DINOv2 port (`tokenizers/dinov2.py`, `ar_gen/convert/dinov2.py`) against timm's `VisionTransformer`.

`tests/fixtures/dinov2_tiny.npz` holds numbers only: the random weights of a tiny DINOv2-style ViT (patch 14, width
48, 5 blocks of 3 heads, 4 registers, LayerScale, position table at 518 px = 37 x 37) in the released DINOv2
naming (`register_tokens`, `pos_embed` with the class slot, `mask_token`), and timm 1.0.31's outputs (CPU, fp32)
at 224 px: the position table resized to 16 x 16 as timm's checkpoint loading does (bicubic, antialiased) and
`forward_intermediates(indices=[i], norm=True, intermediates_only=True, output_fmt='NLC')` for blocks 2 (DiGIT's
third-from-last) and 4 of images sin(0.37 i + 0.011 i^1.1) in [-1, 1] normalised with ImageNet's mean and std.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ar_gen.config import ConfigError
from ar_gen.convert import common, dinov2
from tests import golden
from tokenizers.dinov2 import ARCHS, FeatureEncoder, build_encoder, encoder_section, resample_pos_embed


def images(b, s):
  i = np.arange(b * s * s * 3, dtype=np.float64).reshape(b, s, s, 3)
  return np.sin(0.37 * i + 0.011 * i ** 1.1).astype(np.float32)


@pytest.fixture(scope="module")
def fixture():
  return golden.load("dinov2_tiny.npz")


@pytest.fixture(scope="module")
def encoder(fixture):
  sd = golden.state_dict(fixture, "sd")
  sizes = dinov2.encoder_sizes(sd, num_heads=3)
  assert sizes == dict(patch_size=14, dim=48, depth=5, num_heads=3, num_registers=4)
  model = FeatureEncoder(**sizes, input_size=224, rngs=nnx.Rngs(0))
  return common.load_params(model, dinov2.encoder_params(sd, model.grid), "fixture")


def test_position_table_resized_as_timm_does(fixture):
  table = golden.state_dict(fixture, "sd")["pos_embed"][:, 1:]
  np.testing.assert_allclose(resample_pos_embed(table, (16, 16)), fixture["out/pos_embed_16x16"], rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("layer,block", [(-3, 2), (4, 4), (-1, 4)])
def test_features_match_timm(fixture, encoder, layer, block):
  features = encoder.features(jnp.asarray(images(2, 224)), layer)
  expected = fixture[f"out/features_block{block}"]
  assert features.shape == expected.shape == (2, 256, 48)
  np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_a_feature_layer_that_does_not_exist_is_refused(encoder):
  for layer in (5, -6):
    with pytest.raises(ConfigError, match=rf"encoder.layer={layer}: the encoder has 5 blocks"):
      encoder.features(jnp.zeros((1, 224, 224, 3)), layer)
  with pytest.raises(ConfigError, match="encoder.layer=12"):
    build_encoder(encoder_section(layer=12), 3, nnx.Rngs(0))


def test_vitb14_reg4_has_timms_parameter_count():
  """timm's vit_base_patch14_reg4_dinov2 at img_size=224 has 85,727,232 parameters (counted with timm 1.0.31);
  ar-gen's has the same less the 12 key biases of 768 (softmax removes them: the converter drops them)."""
  model = nnx.eval_shape(lambda: build_encoder(encoder_section(), 3, nnx.Rngs(0)))
  count = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert count == 85_727_232 - 12 * 768
  assert ARCHS["vitb14_reg4"]["depth"] == 12


def test_converted_work_directory_gives_timms_features(tmp_path, fixture):
  """The converter's work directory, read back as a frozen component, gives timm's features at DiGIT's layer."""
  from ar_gen.runs import frozen  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "enc")
  result = dinov2.convert_state_dict(golden.state_dict(fixture, "sd"), out, "fixture.pth", image_size=224,
                                     num_heads=3)
  assert result["arch"] == "custom" and result["grid"] == [16, 16]
  component = frozen.load("encoder", out)
  assert component.exports == "encoder" and component.config.encoder.layer == -3
  features = component.module().features(jnp.asarray(images(2, 224)), component.config.encoder.layer)
  np.testing.assert_allclose(features, fixture["out/features_block2"], rtol=1e-4, atol=1e-4)
  with pytest.raises(Exception, match="not an empty directory"):
    dinov2.convert(str(tmp_path / "missing.pth"), out)


def test_a_checkpoint_without_its_keys_is_named(tmp_path, fixture):
  sd = golden.state_dict(fixture, "sd")
  del sd["blocks.3.mlp.fc1.weight"]
  with pytest.raises(ValueError, match="blocks.3.mlp.fc1.weight"):
    dinov2.convert_state_dict(sd, str(tmp_path / "enc"), "broken.pth", num_heads=3)
  assert not (tmp_path / "enc" / "config.json").exists()
