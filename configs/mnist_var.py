"""Class-conditional next-scale (VAR) model on the MNIST multi-scale tokens (scales 1..8, 130 tokens), CPU-sized.

  ar-gen train --config configs/mnist_var_tok.py --workdir runs/mnist_var_tok
  ar-gen train --config configs/mnist_var.py:tokenizer=runs/mnist_var_tok --workdir runs/mnist_var
  ar-gen sample --workdir runs/mnist_var --num-images 100 --classes all --out runs/mnist_var/samples

Six AR steps per image (one per scale) instead of 64 for the next-token model on the same latent grid. Guidance
ramps from 1 at the first scale to 2 at the last (`cfg_schedule='linear'`, VAR's ramp).
"""

from ar_gen.config import parse_arg
from ar_gen.families.next_scale import default_config, mnist_var_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=500, tokenizer="runs/demo/tokenizer_var")
  return mnist_var_config(default_config(arg.tokenizer), arg.steps, arg.runlocal)
