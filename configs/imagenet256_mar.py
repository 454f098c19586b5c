r"""MAR-B / L / H on ImageNet 256 with MAR's recipe, over the KL-16 tokenizer (`ar-gen convert-mar --vae kl16.ckpt`).

  ar-gen train --config configs/imagenet256_mar.py:size=B,tokenizer=runs/kl16 --workdir runs/mar_b
  ar-gen train --config configs/imagenet256_mar.py:size=B,runlocal --workdir /tmp/mar_smoke   # mock-sized smoke run
"""

from ar_gen.families.mar import imagenet_mar_config


def get_config(arg=None):
  return imagenet_mar_config(arg)
