"""VAR-d30 on ImageNet 256x256: next-scale prediction over the 10 scales of VAR's tokenizer (680 tokens), depth 30,
width 1920, 30 heads (VAR's sizes), class-conditional with guidance ramped over scales.

  ar-gen train --config configs/imagenet256_var_d30.py:tokenizer=RUNS/var_tok --workdir gs://BUCKET/runs/var_d30
  ar-gen train --config configs/imagenet256_var_d30.py:runlocal,tokenizer=/tmp/var_tok --workdir /tmp/var_d30

RUNS/var_tok: a tokenizer trained with configs/imagenet256_var_tok.py, or VAR's released VQVAE converted with
`ar-gen convert-var`. Batch, learning rate and epochs follow VAR's recipe (docs/var.md). `:runlocal`: one step of a
2-block model on 64x64 mock images over a `:runlocal` tokenizer.
"""

from ar_gen.models.config import imagenet_var_config


def get_config(arg=None):
  return imagenet_var_config(30, arg)
