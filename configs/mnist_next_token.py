"""Class-conditional next-token model on the MNIST VQ tokens (8x8 grid, 256 codes), CPU-sized.

  ar-gen train --config configs/mnist_vq.py --workdir runs/mnist_vq
  ar-gen train --config configs/mnist_next_token.py:tokenizer=runs/mnist_vq --workdir runs/mnist_next_token
  ar-gen sample --workdir runs/mnist_next_token --num-images 100 --classes all --out runs/mnist_next_token/samples

Tokens are computed on the fly by the frozen tokenizer; to encode the training split once instead (what the demo
does), run `ar-gen extract-tokens --workdir runs/mnist_vq --data bundled:mnist:train --out runs/mnist_tokens` and
add `--config.data.train=tokens:runs/mnist_tokens`. 1000 steps of batch 32 take about 4 minutes on 2 CPU cores.

`:draft` is a one-block model of width 48, a draft for speculative decoding of the default one
(`ar-gen sample --workdir TARGET --draft-workdir DRAFT`, docs/speculative.md).
"""

from ar_gen.config import parse_arg
from ar_gen.families._discrete import mnist_config
from ar_gen.families.next_token import default_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=1000, tokenizer="runs/demo/tokenizer_vq", draft=False)
  c = mnist_config(default_config(arg.tokenizer), arg.steps, arg.runlocal)
  c.model.update(size="custom", depth=4, dim=96, num_heads=3, mlp_multiple_of=32, num_classes=10,
                 class_dropout=0.1, token_dropout=0.0)
  if arg.draft:
    c.model.update(depth=1, dim=48, num_heads=2)
  c.sample.update(cfg_scale=2.0, temperature=0.7)
  return c
