"""NFIG's frequency-band residual tokenizer on the bundled MNIST digits (CPU-sized), 130 tokens per digit.

configs/mnist_var_tok.py with one change, the quantizer's targets: band k quantizes the latent low-passed to
band k (`tokenizers/frequency.py`), on the same maps 1, 2, 3, 4, 6, 8 of one 256 x 8 codebook.
`:band_rule=linf_nyquist` (or `radial_token_fraction`, the paper's) picks another band rule.

  ar-gen train --config configs/mnist_nfig_tok.py --workdir runs/mnist_nfig_tok
  ar-gen eval-tokenizer --workdir runs/mnist_nfig_tok
"""

from ar_gen.config import parse_arg
from tokenizers.config import mnist_tokenizer_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=500, band_rule="bins_quantile")
  c = mnist_tokenizer_config("frequency", arg.steps, arg.runlocal)
  c.model.quant_conv_kernel = 3
  c.model.frequency.update(scales=(1, 2, 3, 4, 6, 8), codebook_size=256, code_dim=8, normalize=False,
                           phi_ratio=0.5, num_phi=4, restart_every_steps=50, prefix_fraction=0.05,
                           band_rule=arg.band_rule)
  return c
