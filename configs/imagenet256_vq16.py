"""LlamaGen's VQ-16 tokenizer on ImageNet 256x256: 16384 l2-normalised codes of 8 dims, downsample 16, trained with
LlamaGen's loss and recipe (tokenizer/tokenizer_image/vq_train.py).

  ar-gen convert-lpips vgg16-397923af.pth vgg.pth --out lpips.npz                      # once (needs torch)
  ar-gen train --config configs/imagenet256_vq16.py --workdir gs://BUCKET/runs/vq16 \\
      --config.loss.lpips_path=lpips.npz                                               # accelerators
  ar-gen train --config configs/imagenet256_vq16.py:runlocal --workdir /tmp/vq16       # CPU smoke run

Needs `tfds:imagenet2012` prepared as array_record under data.data_dir (README: "ImageNet"). Loss: L2 + LPIPS (weight
1; its VGG weights come only from `ar-gen convert-lpips`, and training without them stops with an error naming it)
+ codebook and commitment (beta 0.25) + PatchGAN hinge loss (weight 0.5, fixed, from step 20000); no MS-SSIM, no
entropy term. Adam (0.9, 0.95) at a constant 1e-4, no weight decay, grad clip 1, batch 128, 40 epochs, no EMA.
`:runlocal` trains one step of a narrow model on 64x64 mock images without LPIPS. What differs from LlamaGen's code:
docs/recipes.md.
"""

from ar_gen.config import IMAGENET_TRAIN_EXAMPLES, num_steps, parse_arg
from tokenizers.config import imagenet_tokenizer_config, shrink_for_runlocal


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False)
  steps = num_steps(epochs=40, batch_size=128, dataset_size=IMAGENET_TRAIN_EXAMPLES)
  c = imagenet_tokenizer_config("vq", total_steps=steps, batch_size=128, ema_decay=0.0)
  c.optimizer.update(lr=1e-4, warmup_steps=0, end_lr_factor=1.0, b1=0.9, b2=0.95, weight_decay=0.0, grad_clip=1.0)
  c.model.update(channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
                 attention=True)
  c.model.vq.update(codebook_size=16384, code_dim=8, normalize=True, beta=0.25, restart_every_steps=0)
  c.loss.update(rec="l2", rec_weight=1.0, ms_ssim_weight=0.0, lpips_weight=1.0, disc_weight=0.5, disc_start=20_000,
                disc_adaptive_weight=False, disc_channels=64, disc_layers=3)
  return shrink_for_runlocal(c) if arg.runlocal else c
