"""Open-MAGVIT2's LFQ tokenizer on ImageNet 256x256: 18 sign bits per token (2^18 codes), downsample 16.

  ar-gen train --config configs/imagenet256_lfq.py --workdir gs://BUCKET/runs/lfq18 \
      --config.loss.lpips_path=gs://BUCKET/lpips.npz                                      # accelerators
  ar-gen train --config configs/imagenet256_lfq.py:runlocal --workdir /tmp/lfq18      # CPU smoke run (no LPIPS)

LPIPS (weight 1.0, as Open-MAGVIT2's perceptual loss) needs the weights of `ar-gen convert-lpips`.

The entropy loss is exact for all 2^18 codes without an N x 2^18 matrix (tokenizers/lfq.py).
"""

from ar_gen.config import parse_arg
from tokenizers.config import imagenet_tokenizer_config, shrink_for_runlocal


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  c = imagenet_tokenizer_config("lfq", total_steps=1_000_000, batch_size=256, ema_decay=0.999)
  c.optimizer.update(lr=1e-4, warmup_steps=0, b1=0.5, b2=0.9, weight_decay=0.0, grad_clip=1.0, end_lr_factor=1.0)
  c.model.update(channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=4, z_channels=256,
                 attention=False)
  c.model.lfq.update(num_bits=18, beta=0.25, entropy_weight=0.1, diversity_gamma=1.0, entropy_temperature=0.01)
  c.loss.update(rec="l1", ms_ssim_weight=0.1, disc_weight=0.1, disc_start=0)
  return shrink_for_runlocal(c) if arg.runlocal else c
