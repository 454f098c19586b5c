"""VAR's multi-scale VQVAE on ImageNet 256x256: 4096 codes of 32 dims shared by 10 scales (1 .. 16), downsample 16,
3x3 projections, 4 partially shared phi convolutions (ratio 0.5). VAR never released this training code.

  ar-gen train --config configs/imagenet256_var_tok.py --workdir gs://BUCKET/runs/var_tok      # accelerators
  ar-gen train --config configs/imagenet256_var_tok.py:runlocal --workdir /tmp/var_tok       # CPU smoke run

Loss as LlamaGen's VQ-16 (l2 + LPIPS + PatchGAN; pass --config.loss.lpips_path=FILE.npz from `ar-gen
convert-lpips`). `:runlocal` trains one step of a narrow model on 64x64 mock images (scales 1, 2, 3, 4).
"""

from ar_gen.config import parse_arg
from tokenizers.config import imagenet_tokenizer_config, shrink_for_runlocal
from tokenizers.multiscale import VAR_SCALES


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  c = imagenet_tokenizer_config("multiscale", total_steps=400_000, batch_size=128, ema_decay=0.9999)
  c.optimizer.update(lr=1e-4, warmup_steps=1000, b1=0.9, b2=0.95, weight_decay=0.05, grad_clip=1.0)
  c.model.update(channels=160, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                 z_channels=32, attention=True, quant_conv_kernel=3)
  c.model.multiscale.update(codebook_size=4096, code_dim=32, normalize=False, scales=VAR_SCALES, phi_ratio=0.5,
                            num_phi=4, beta=0.25)
  c.loss.update(rec="l2", ms_ssim_weight=0.0, disc_weight=0.5, disc_start=20_000)
  if arg.runlocal:
    c = shrink_for_runlocal(c)
    c.model.channels = 32  # GroupNorm needs 32 channels
    c.model.multiscale.scales = (1, 2, 3, 4)  # a 64 / 16 = 4 latent
  return c
