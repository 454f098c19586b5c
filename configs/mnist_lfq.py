r"""LFQ tokenizer on the bundled MNIST digits (CPU-sized): 32x32 -> 8x8 tokens of 8 sign bits (256 codes).

  ar-gen train --config configs/mnist_lfq.py --workdir runs/mnist_lfq
  ar-gen eval-tokenizer --workdir runs/mnist_lfq
"""

from ar_gen.config import parse_arg
from tokenizers.config import mnist_tokenizer_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=350)
  c = mnist_tokenizer_config("lfq", arg.steps, arg.runlocal)
  c.model.lfq.update(num_bits=8, beta=0.25, entropy_weight=0.05, diversity_gamma=1.0, entropy_temperature=0.1)
  return c
