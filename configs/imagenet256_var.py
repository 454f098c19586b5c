"""VAR-d16 .. d30 on ImageNet 256x256: next-scale prediction over the 10 scales of VAR's tokenizer (680 tokens), depth
`:depth=N` (16, 20, 24 or 30), width 64 N, N heads (VAR's sizes), class-conditional with guidance ramped over scales.

  ar-gen train --config configs/imagenet256_var.py:depth=16,tokenizer=RUNS/var_tok --workdir gs://BUCKET/runs/var_d16
  ar-gen train --config configs/imagenet256_var.py:depth=16,runlocal,tokenizer=/tmp/var_tok --workdir /tmp/var_d16

RUNS/var_tok: a tokenizer trained with configs/imagenet256_var_tok.py, or VAR's released VQVAE converted with
`ar-gen convert-var` (OUT/tokenizer; VAR trains on that one). Everything follows the training commands of VAR's
README per depth: batch 768 (d30: 1024), lr 1e-4 (d24, d30: 8e-5) per 256 images, 200 / 250 / 350 / 350 epochs,
2% warmup then VAR's `lin0` decay to 0.1 (d24, d30: 0.01), AdaLN gate init 1e-3 / 1e-3 / 1e-4 / 1e-5, drop-path
0.1 d / 24, grad clip 2, no flips; what differs (bf16 for fp16, center crops, d30's weight-decay ramp):
docs/recipes.md. d24 and d30 shard parameters over all devices (`mesh.fsdp=-1`). `:runlocal`: one step of a
2-block model on 64x64 mock images over a `:runlocal` tokenizer.
"""

from ar_gen.families.next_scale import imagenet_var_config


def get_config(arg=None):
  return imagenet_var_config(arg)
