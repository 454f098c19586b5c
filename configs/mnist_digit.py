r"""Discriminative tokens, stage 2 on MNIST: the pixel decoder generating the demo VQ's 64 tokens from the 64 ids of
stage 1 (`:variant=ar`, causal; `:variant=maskgit`, 8 parallel steps), CPU-sized.

  ar-gen train --config configs/mnist_digit.py:tokenizer=runs/mnist_vq,ids=runs/mnist_digit_tok,stage1=runs/mnist_digit_s1 \
      --workdir runs/mnist_digit
  ar-gen sample --workdir runs/mnist_digit --num-images 100 --classes all --out runs/mnist_digit/samples

`tokenizer`: the VQ (configs/mnist_vq.py); `ids`: the discriminative tokenizer of `ar-gen fit-kmeans`; `stage1`:
configs/mnist_digit_stage1.py's run (empty: train stage 2 alone). Trains on images (ids and VQ tokens of each
batch); the `reconstruction` evaluator scores the pixel decoder's images from the true ids of held-out digits
(PSNR) at the last step.
"""

from ar_gen.families.discriminative import mnist_stage2_config


def get_config(arg=None):
  return mnist_stage2_config(arg)
