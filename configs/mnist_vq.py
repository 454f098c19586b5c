r"""VQ tokenizer on the bundled MNIST digits (CPU-sized): 32x32 -> 8x8 tokens from 256 l2-normalised 8-d codes.

  ar-gen train --config configs/mnist_vq.py --workdir runs/mnist_vq
  ar-gen eval-tokenizer --workdir runs/mnist_vq

Reaches about 25 dB PSNR and full codebook use on the held-out digits in a few CPU minutes (see README).
"""

from ar_gen.config import parse_arg
from tokenizers.config import mnist_tokenizer_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=500)
  c = mnist_tokenizer_config("vq", arg.steps, arg.runlocal)
  c.model.vq.update(codebook_size=256, code_dim=8, restart_every_steps=50)
  return c
