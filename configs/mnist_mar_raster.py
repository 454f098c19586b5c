r"""The causal continuous model (raster order, KV cache, diffusion head) on the MNIST KL tokens, CPU-sized: the same
as `configs/mnist_mar.py:order=raster`.

  ar-gen train --config configs/mnist_mar_raster.py:tokenizer=runs/mnist_kl --workdir runs/mnist_mar_raster

`:draft`: a draft for continuous speculative decoding of it (docs/speculative.md).
"""

from ar_gen.config import parse_arg
from ar_gen.families.mar import mnist_mar_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=0, tokenizer="runs/demo/tokenizer_kl", draft=False)
  return mnist_mar_config(f"order=raster,steps={arg.steps},tokenizer={arg.tokenizer}"
                          + (",runlocal" if arg.runlocal else "") + (",draft" if arg.draft else ""))
