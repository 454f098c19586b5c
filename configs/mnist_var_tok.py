"""VAR's multi-scale residual tokenizer on the bundled MNIST digits (CPU-sized), 130 tokens per digit.

32x32 -> 8x8 latent, tokenized at scales 1, 2, 3, 4, 6, 8 from one codebook of 256 Euclidean 8-d codes, with 4
shared phi convolutions.

  ar-gen train --config configs/mnist_var_tok.py --workdir runs/mnist_var_tok
  ar-gen eval-tokenizer --workdir runs/mnist_var_tok

Same encoder and decoder as configs/mnist_vq.py; the demo trains it for its next-scale stage (see README). Unlike
VAR, 5% of each batch is decoded from a random proper prefix of scales (`model.multiscale.prefix_fraction`):
without it the decoder never sees a partial sum and the previews of the first scales are no better than a blank
image (PSNR of 1 and 2 scales 12.23 and 12.16 dB in one 500-step run; 12.76 and 12.99 with it, full 24.10 vs
22.46 dB).
"""

from ar_gen.config import parse_arg
from tokenizers.config import mnist_tokenizer_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=500)
  c = mnist_tokenizer_config("multiscale", arg.steps, arg.runlocal)
  c.model.quant_conv_kernel = 3
  c.model.multiscale.update(scales=(1, 2, 3, 4, 6, 8), codebook_size=256, code_dim=8, normalize=False,
                            phi_ratio=0.5, num_phi=4, restart_every_steps=50, prefix_fraction=0.05)
  return c
