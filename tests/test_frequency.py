"""The frequency-band residual quantizer (NFIG): band masks, band-limited targets, VAR equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.conftest import assert_psnr_rises_with_each_map, train_progressive_tokenizer
from tokenizers import frequency, multiscale

SIDE = 16
SCALES = frequency.NFIG_SCALES


@pytest.mark.parametrize("rule", frequency.BAND_RULES)
def test_masks_are_disjoint_hermitian_symmetric_and_sum_to_one_exactly(rule):
  masks = frequency.band_masks(SIDE, SCALES, rule)
  assert masks.shape == (len(SCALES), SIDE, SIDE)
  assert set(np.unique(masks).tolist()) <= {0.0, 1.0}
  np.testing.assert_array_equal(masks.sum(0), np.ones((SIDE, SIDE), np.float32))
  flip = (-np.arange(SIDE)) % SIDE  # the bin of frequency -u
  np.testing.assert_array_equal(masks, masks[:, flip][:, :, flip])
  assert masks[0, 0, 0] == 1  # the mean is in the first band


@pytest.mark.parametrize("rule", frequency.BAND_RULES)
def test_the_bands_of_a_random_latent_sum_back_to_it(rule):
  masks = frequency.band_masks(SIDE, SCALES, rule)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, SIDE, SIDE, 3))
  spectrum = jnp.fft.fft2(z, axes=(1, 2))
  bands = [jnp.fft.ifft2(spectrum * m[None, :, :, None], axes=(1, 2)) for m in masks]
  assert max(float(jnp.abs(jnp.imag(b)).max()) for b in bands) <= 1e-5
  np.testing.assert_allclose(np.asarray(sum(jnp.real(b) for b in bands)), np.asarray(z), atol=1e-5)
  cumulative = np.cumsum(masks, 0) > 0.5
  np.testing.assert_allclose(np.asarray(frequency.low_pass(z, cumulative[3])),
                             np.asarray(sum(jnp.real(b) for b in bands[:4])), atol=1e-5)
  assert frequency.low_pass(z, cumulative[-1]) is z  # the last band's target is the latent itself


def test_bin_counts_per_band_on_a_16x16_latent():
  counts = {rule: [int(m.sum()) for m in frequency.band_masks(SIDE, SCALES, rule)] for rule in frequency.BAND_RULES}
  # the paper's rule leaves bands 1-4 (maps 2, 3, 4, 5) without a bin; the Nyquist rule the maps whose Nyquist
  # equals the previous map's (3 after 2, 5 after 4); the quantile rule none
  assert counts["radial_token_fraction"] == [1, 0, 0, 0, 0, 8, 12, 40, 88, 107]
  assert counts["linf_nyquist"] == [1, 8, 0, 16, 0, 24, 32, 40, 48, 87]
  assert counts["bins_quantile"] == [1, 4, 4, 4, 8, 16, 24, 36, 64, 95]
  assert all(sum(c) == SIDE * SIDE for c in counts.values())


def test_an_unknown_rule_or_masks_of_the_wrong_shape_are_named():
  with pytest.raises(ValueError, match="band_rule must be one of"):
    frequency.band_masks(SIDE, SCALES, "radial")
  with pytest.raises(ValueError, match="do not fit 3 bands on a 4 x 4 latent"):
    frequency.FrequencyBandQuantizer(16, 4, (1, 2, 4), masks=np.ones((2, 4, 4)), rngs=nnx.Rngs(0))


def _pair(masks=None, rule="bins_quantile"):
  kwargs = dict(beta=0.25, phi_ratio=0.5, num_phi=2)
  var = multiscale.MultiScaleQuantizer(32, 4, (1, 2, 4, 8), rngs=nnx.Rngs(3), **kwargs)
  nfig = frequency.FrequencyBandQuantizer(32, 4, (1, 2, 4, 8), masks=masks, band_rule=rule, rngs=nnx.Rngs(3),
                                          **kwargs)
  return var, nfig


def test_with_all_pass_masks_the_quantizer_is_vars_bit_for_bit():
  all_pass = np.zeros((4, 8, 8), np.float32)
  all_pass[0] = 1
  var, nfig = _pair(all_pass)
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 4))
  zq_var, tokens_var, aux_var = var(z)
  zq_nfig, tokens_nfig, aux_nfig = nfig(z)
  np.testing.assert_array_equal(np.asarray(tokens_nfig), np.asarray(tokens_var))
  np.testing.assert_array_equal(np.asarray(zq_nfig), np.asarray(zq_var))
  np.testing.assert_array_equal(np.asarray(nfig.embed(tokens_nfig)), np.asarray(var.embed(tokens_var)))
  assert float(aux_nfig["quant_loss"]) == float(aux_var["quant_loss"])


def test_band_limited_targets_change_the_coarse_tokens_but_not_the_protocol():
  var, nfig = _pair()
  z = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 4))
  tokens_var, tokens_nfig = var.indices(z), nfig.indices(z)
  assert tokens_nfig.shape == tokens_var.shape and not np.array_equal(np.asarray(tokens_nfig), np.asarray(tokens_var))
  # the first map of each quantizes the mean, which low-passing keeps: the same token
  np.testing.assert_array_equal(np.asarray(tokens_nfig[:, :1]), np.asarray(tokens_var[:, :1]))
  # the residual-quantizer protocol rebuilds what embed gives
  f_hat = nfig.initial_features(2)
  for k, group in enumerate(nfig.layout.split(tokens_nfig)):
    f_hat = nfig.accumulate(f_hat, k, group.reshape(2, -1))
  np.testing.assert_allclose(np.asarray(f_hat), np.asarray(nfig.embed(tokens_nfig)), atol=1e-6)


@pytest.fixture(scope="module")
def trained_nfig_tokenizer(tmp_path_factory):
  return train_progressive_tokenizer(str(tmp_path_factory.mktemp("nfig_tok")), "mnist_nfig_tok.py", "frequency")


def test_psnr_rises_with_each_band_on_heldout_digits(trained_nfig_tokenizer):
  # the decoder sees the sum of the first k bands' rebuilt latents: each band adds detail the earlier ones lacked
  assert_psnr_rises_with_each_map(trained_nfig_tokenizer)
