r"""MAR (masked order, diffusion head) on the MNIST KL tokens (8 x 8 vectors of 4 floats), CPU-sized;
`:order=raster` is the causal variant (raster order, KV cache) over the same head.

  ar-gen train --config configs/mnist_kl.py --workdir runs/mnist_kl
  ar-gen train --config configs/mnist_mar.py:tokenizer=runs/mnist_kl --workdir runs/mnist_mar
  ar-gen train --config configs/mnist_mar.py:tokenizer=runs/mnist_kl,order=raster --workdir runs/mnist_mar_raster
  ar-gen sample --workdir runs/mnist_mar --num-images 100 --classes all --out runs/mnist_mar/samples
"""

from ar_gen.families.mar import mnist_mar_config


def get_config(arg=None):
  return mnist_mar_config(arg)
