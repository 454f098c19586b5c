"""Coarse-to-fine stage 2 on MNIST: all 64 fine VQ tokens in one bidirectional pass from stage 1's coarse labels,
class-conditional, logits masked to each label's cluster, CPU-sized.

  ar-gen train --config configs/mnist_ctf.py:tokenizer=runs/mnist_ctf_tok,stage1=runs/mnist_ctf_stage1 \\
      --workdir runs/mnist_ctf
  ar-gen sample --workdir runs/mnist_ctf --num-images 100 --classes all --out runs/mnist_ctf/samples

`tokenizer`: the clustered tokenizer of configs/mnist_ctf_stage1.py; `stage1`: that run (set `stage1=` empty to
train stage 2 alone, then sample with --config.frozen.stage1=DIR). Stage 2 trains on the true coarse labels of the
VQ's tokens (images, or `--config.data.train=tokens:DIR` extracted by the VQ itself). Sampling: stage 1 with the
`sample` section (guidance 2, temperature 0.7, as configs/mnist_next_token.py), stage 2 with `sample.fine_*`.
"""

from ar_gen.config import parse_arg
from ar_gen.families._discrete import mnist_config
from ar_gen.families.coarse_to_fine import default_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=1000, tokenizer="runs/demo/tokenizer_ctf",
                  stage1="runs/demo/coarse_to_fine_stage1")
  c = mnist_config(default_config(arg.tokenizer, arg.stage1), arg.steps, arg.runlocal)
  c.model.update(size="custom", depth=4, dim=96, num_heads=3, mlp_multiple_of=32, num_classes=10)
  c.sample.update(cfg_scale=2.0, temperature=0.7, fine_temperature=1.0, fine_top_k=0)
  return c
