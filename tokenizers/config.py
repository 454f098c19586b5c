"""Config defaults of tokenizer experiments: the `model` and `loss` sections (used by configs/*.py)."""

import ml_collections

from ar_gen.config import base_config


def tokenizer_config(**data) -> ml_collections.ConfigDict:
  """A tokenizer training config with every key and its default; experiment files change what they need.

  model: quantizer ('vq' | 'lfq'), encoder/decoder widths, VQ codebook (codebook_size x code_dim, dead-code
  restart), LFQ bits and entropy loss. loss: reconstruction (l1 | l2), MS-SSIM, LPIPS (when lpips_path names converted weights), PatchGAN
  (off when disc_weight=0).
  """
  c = base_config(**data)
  c.task = "tokenizer"
  c.model = ml_collections.ConfigDict(dict(
      quantizer="vq", channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
      attention=True, dtype="float32", param_dtype="float32",
      codebook_size=16384, code_dim=8, beta=0.25, restart_every_steps=0, restart_threshold=0.03,
      num_bits=18, entropy_weight=0.1, diversity_gamma=1.0, entropy_temperature=0.01))
  c.loss = ml_collections.ConfigDict(dict(
      rec="l2", rec_weight=1.0, ms_ssim_weight=0.0, lpips_path="", lpips_weight=1.0, disc_weight=0.0, disc_start=20000,
      disc_channels=64, disc_layers=3))
  return c
