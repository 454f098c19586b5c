r"""DiGIT's pixel decoder on ImageNet 256: LlamaGen-L's sizes generating ar-gen's VQ-16 tokens from the 256 DINOv2 ids
(`:variant=ar`, top-p 0.8; `:variant=maskgit`, 8 steps), LlamaGen's recipe, no class (as DiGIT's released stage 2).

  ar-gen train --config configs/imagenet256_digit.py:variant=ar --workdir runs/imagenet256_digit

`:tokenizer=` (the VQ), `:ids=` (the discriminative tokenizer), `:stage1=` name the other runs; `:runlocal` is a
tiny CPU variant. See docs/digit.md.
"""

from ar_gen.families.discriminative import imagenet_stage2_config


def get_config(arg=None):
  return imagenet_stage2_config(arg)
