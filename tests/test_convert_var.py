"""VAR weights through the converter reproduce the official VAR code's outputs (golden fixture).

`tests/fixtures/var_tiny.npz` holds numbers only: the random weights of a tiny VQVAE (ch 32, ch_mult (1, 1), one
residual block per level, 64 codes of 8 dims, scales 1, 2, 3, 4, VAR's 4 partially shared phi) and of a tiny VAR
(depth 2, width 64, 2 heads, 10 classes, l2-normalised attention; weights perturbed away from VAR's
near-identity initialisation), 8x8 input images, and the official code's outputs on them (CPU, fp32): the
scale-by-scale tokens, the reconstructions from every prefix of scales, the teacher-forcing inputs, teacher-forced
logits, and greedy (top-k 1) tokens and images sampled with VAR's guidance ramp cfg = 1.5. The weights go through
`convert_state_dicts` into work directories (what `ar-gen convert-var` writes) and are restored from there.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ar_gen.convert import common
from ar_gen.convert import var as var_convert
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.models.next_scale import NextScaleModel
from ar_gen.runs.run import restore_run
from ar_gen.layout import TokenLayout
from tests import golden


@pytest.fixture(scope="module")
def fixture():
  return golden.load("var_tiny.npz")


def _nhwc(x_NCHW):
  return np.transpose(x_NCHW, (0, 2, 3, 1))


@pytest.fixture(scope="module")
def converted(fixture, tmp_path_factory):
  """The fixture's state dicts through `convert_state_dicts` into work directories, restored as `ar-gen` would."""
  dirs = var_convert.convert_state_dicts(golden.state_dict(fixture, "vae"), golden.state_dict(fixture, "var"),
                                         str(tmp_path_factory.mktemp("var")), image_size=8)
  return restore_run(dirs["var"])


@pytest.fixture(scope="module")
def tokenizer(converted):
  run = converted[0]
  m = run.task.tokenizer.config.model
  q = m.multiscale
  assert (m.channels, tuple(m.channel_mult), q.codebook_size, tuple(q.scales), q.num_phi) == (32, (1, 1), 64,
                                                                                             (1, 2, 3, 4), 4)
  return run.task.tokenizer.module()


@pytest.fixture(scope="module")
def model(converted):
  run, state, _ = converted
  assert (run.config.task, run.config.model.depth, run.config.model.num_heads) == ("next_scale", 2, 2)
  return run.model(state)


def test_tokens_and_progressive_reconstructions_match(fixture, tokenizer):
  tokens = tokenizer.encode(jnp.asarray(_nhwc(fixture["images"])))
  np.testing.assert_array_equal(tokens, fixture["tokens"])
  for k, expected in enumerate(fixture["recon_by_scales"]):
    decoded = np.clip(tokenizer.decode(jnp.asarray(fixture["tokens"]), k + 1), -1, 1)
    np.testing.assert_allclose(decoded, _nhwc(expected), rtol=1e-4, atol=1e-4, err_msg=f"prefix of {k + 1} scales")
  np.testing.assert_allclose(tokenizer.decode(jnp.asarray(fixture["tokens"])), _nhwc(fixture["recon"]),
                             rtol=1e-4, atol=1e-4)


def test_teacher_inputs_and_logits_match(fixture, tokenizer, model):
  inputs = tokenizer.quantizer.teacher_inputs(jnp.asarray(fixture["tokens"]))
  np.testing.assert_allclose(inputs, fixture["teacher_inputs"], rtol=1e-4, atol=1e-5)
  logits = model(jnp.asarray(fixture["teacher_inputs"]), jnp.asarray(fixture["labels"]))
  np.testing.assert_allclose(logits, fixture["logits"], rtol=1e-4, atol=1e-4)


def test_greedy_guided_sampling_matches(fixture, tokenizer, model, converted):
  run = converted[0]
  cfg = SamplingConfig(temperature=0.0, cfg_scale=2.5, cfg_schedule="linear")  # VAR's cfg 1.5, ramped
  # the family's task: the one sampler driver over the model composed with the frozen tokenizer's quantizer
  sample = nnx.jit(lambda m, frozen, labels: run.task.sample_tokens(m, {"label": labels}, jax.random.PRNGKey(0),
                                                                    frozen, cfg))
  tokens = sample(model, run.frozen_state, jnp.asarray(fixture["labels"]))
  np.testing.assert_array_equal(tokens, fixture["greedy_cfg1.5_tokens"])
  images = (np.clip(tokenizer.decode(tokens), -1, 1) + 1) / 2
  np.testing.assert_allclose(images, _nhwc(fixture["greedy_cfg1.5_images"]), rtol=1e-4, atol=1e-4)


def test_unsupported_checkpoint_is_named(fixture):
  sd = dict(golden.state_dict(fixture, "var"), **{"shared_ada_lin.1.weight": np.zeros((6, 6))})
  with pytest.raises(ValueError, match="shared AdaLN"):
    var_convert.var_model_config(sd)
  sd = golden.state_dict(fixture, "var")
  layout = TokenLayout.square_maps((1, 2, 3, 4), 64)
  model = nnx.eval_shape(lambda: NextScaleModel(layout, 8, 10, 2, 64, 2, mlp_ratio=2.0, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="var_d16.pth.*fc1"):
    common.load_params(model, var_convert.var_params(sd), "var_d16.pth")


def test_convert_var_names_a_missing_checkpoint(tmp_path, capsys):
  from ar_gen import cli  # pylint: disable=g-import-not-at-top
  missing = str(tmp_path / "vae_ch160v4096z32.pth")
  assert cli.main(["convert-var", "--vae", missing, "--var", missing, "--out", str(tmp_path / "out")]) == 2
  assert missing in capsys.readouterr().err
