"""Coarse-to-fine stage 1 on MNIST: the next-token model of configs/mnist_next_token.py over the 16 coarse labels of
the demo VQ's 256 codes (a clustered tokenizer), CPU-sized.

  ar-gen train --config configs/mnist_vq.py --workdir runs/mnist_vq
  ar-gen cluster-codebook --workdir runs/mnist_vq --k 16 --out runs/mnist_ctf_tok
  ar-gen train --config configs/mnist_ctf_stage1.py:tokenizer=runs/mnist_ctf_tok --workdir runs/mnist_ctf_stage1

Then stage 2 (configs/mnist_ctf.py). Stage 1 alone draws the coarse labels' centroids through the VQ decoder (its
training pictures); images come from `ar-gen sample --workdir STAGE2`. Same depth, width, steps and guidance as the
next-token config: only the vocabulary differs (16 labels instead of 256 codes).
"""

from ar_gen.config import parse_arg
from ar_gen.families._discrete import mnist_config
from ar_gen.families.next_token import default_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=1000, tokenizer="runs/demo/tokenizer_ctf")
  c = mnist_config(default_config(arg.tokenizer), arg.steps, arg.runlocal)
  c.model.update(size="custom", depth=4, dim=96, num_heads=3, mlp_multiple_of=32, num_classes=10,
                 class_dropout=0.1, token_dropout=0.0)
  c.sample.update(cfg_scale=2.0, temperature=0.7)
  return c
