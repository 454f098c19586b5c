"""NFIG's frequency-band residual tokenizer on ImageNet 256x256: configs/imagenet256_var_tok.py (VAR's VQVAE: 4096
codes of 32 dims, downsample 16, 4 phi convolutions) with band-limited targets on the 10 maps 1 .. 16.

  ar-gen train --config configs/imagenet256_nfig_tok.py --workdir gs://BUCKET/runs/nfig_tok    # accelerators
  ar-gen train --config configs/imagenet256_nfig_tok.py:runlocal --workdir /tmp/nfig_tok     # CPU smoke run

NFIG trains no tokenizer of its own (it reuses VAR's); `ar-gen convert-var` gives VAR's released VQVAE, whose
codebook was trained on all-pass targets, so train this config (or fine-tune from it) for band-limited ones.
`:band_rule=radial_token_fraction` (the paper's) or `linf_nyquist` picks another band rule (docs/families.md).
"""

from ar_gen.config import parse_arg
from tokenizers import frequency
from tokenizers.config import imagenet_tokenizer_config, shrink_for_runlocal


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, band_rule="bins_quantile")
  c = imagenet_tokenizer_config("frequency", total_steps=400_000, batch_size=128, ema_decay=0.9999)
  c.optimizer.update(lr=1e-4, warmup_steps=1000, b1=0.9, b2=0.95, weight_decay=0.05, grad_clip=1.0)
  c.model.update(channels=160, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                 z_channels=32, attention=True, quant_conv_kernel=3)
  c.model.frequency.update(codebook_size=4096, code_dim=32, normalize=False, scales=frequency.NFIG_SCALES,
                           phi_ratio=0.5, num_phi=4, beta=0.25, band_rule=arg.band_rule)
  c.loss.update(rec="l2", ms_ssim_weight=0.0, disc_weight=0.5, disc_start=20_000)
  if arg.runlocal:
    c = shrink_for_runlocal(c)
    c.model.channels = 32  # GroupNorm needs 32 channels
    c.model.frequency.scales = (1, 2, 3, 4)  # a 64 / 16 = 4 latent
  return c
