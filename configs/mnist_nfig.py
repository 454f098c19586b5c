"""Class-conditional next-frequency (NFIG) model on the MNIST frequency-band tokens (maps 1..8, 130 tokens), CPU-sized.

  ar-gen train --config configs/mnist_nfig_tok.py --workdir runs/mnist_nfig_tok
  ar-gen train --config configs/mnist_nfig.py:tokenizer=runs/mnist_nfig_tok --workdir runs/mnist_nfig
  ar-gen sample --workdir runs/mnist_nfig --num-images 100 --classes all --out runs/mnist_nfig/samples

configs/mnist_var.py over the band tokenizer: the same generator (4 blocks, width 96), steps, optimizer and
sampling, so that the demo's next_scale and next_frequency stages differ only in the quantizer's targets.
"""

from ar_gen.config import parse_arg
from ar_gen.families.next_frequency import default_config
from ar_gen.families.next_scale import mnist_var_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=500, tokenizer="runs/demo/tokenizer_nfig")
  return mnist_var_config(default_config(arg.tokenizer), arg.steps, arg.runlocal)
