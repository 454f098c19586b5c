r"""DiGIT's stage 1 on ImageNet 256: a 16-layer, 1024-wide GPT (219M) over the K = 8192 k-means ids of DINOv2
ViT-B/14-reg4 features (16 x 16 per image), label smoothing 0.1, top-k 200 without guidance.

  ar-gen convert-dinov2 dinov2_vitb14_reg4_pretrain.pth --out runs/dinov2_b14_reg4
  ar-gen fit-kmeans --encoder runs/dinov2_b14_reg4 --data tfds:imagenet2012:train --k 8192 --examples 128000 \
      --vectors 3000000 --out runs/imagenet256_digit_k8192
  ar-gen train --config configs/imagenet256_digit_stage1.py --workdir runs/imagenet256_digit_stage1

`:tokenizer=DIR` names another discriminative tokenizer; `:runlocal` is a tiny CPU variant. See docs/digit.md.
"""

from ar_gen.families.discriminative import imagenet_stage1_config


def get_config(arg=None):
  return imagenet_stage1_config(arg)
