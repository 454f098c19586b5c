"""LlamaGen's VQ-16 tokenizer on ImageNet 256x256: 16384 l2-normalised codes of 8 dims, downsample 16.

  ar-gen train --config configs/imagenet256_vq16.py --workdir gs://BUCKET/runs/vq16      # accelerators
  ar-gen train --config configs/imagenet256_vq16.py:runlocal --workdir /tmp/vq16       # CPU smoke run

Needs `tfds:imagenet2012` prepared as array_record under data.data_dir (README: "ImageNet"). LlamaGen adds an
LPIPS term (weight 1): convert VGG weights once with `ar-gen convert-lpips` and pass
--config.loss.lpips_path=FILE.npz (none can be downloaded at run time; MS-SSIM is on by default).
"""

from ar_gen.config import parse_arg
from tokenizers.config import imagenet_tokenizer_config, shrink_for_runlocal


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  c = imagenet_tokenizer_config("vq", total_steps=400_000, batch_size=128, ema_decay=0.9999)
  c.optimizer.update(lr=1e-4, warmup_steps=1000, b1=0.9, b2=0.95, weight_decay=0.05, grad_clip=1.0)
  c.model.update(channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
                 attention=True)
  c.model.vq.update(codebook_size=16384, code_dim=8, beta=0.25, restart_every_steps=0)
  c.loss.update(rec="l2", ms_ssim_weight=0.1, disc_weight=0.5, disc_start=20_000)
  return shrink_for_runlocal(c) if arg.runlocal else c
