r"""KL-VAE (continuous) tokenizer on the bundled MNIST digits (CPU-sized): 32x32 -> 8x8 latent vectors of 4 floats.

  ar-gen train --config configs/mnist_kl.py --workdir runs/mnist_kl
  ar-gen eval-tokenizer --workdir runs/mnist_kl     # PSNR, SSIM, and the tokens' mean and std (about 0 and 1)

The latent scale factor is measured while it trains (`model.kl.scale_factor=0`: 1 / the running standard deviation
of the posterior means), so the tokens the MAR family reads have about unit variance.
"""

from ar_gen.config import parse_arg
from tokenizers.config import mnist_tokenizer_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=500)
  c = mnist_tokenizer_config("kl", arg.steps, arg.runlocal)
  c.model.kl.update(embed_dim=4, kl_weight=1e-4, scale_factor=0.0)
  return c
