"""LlamaGen-B .. 3B on ImageNet 256x256: class-conditional next-token prediction over the 16x16 tokens of the VQ-16
tokenizer (16384 codes), size `:size=S` (B, L, XL, XXL or 3B: LlamaGen's depth / width / heads).

  ar-gen train --config configs/imagenet256_vq16.py --workdir gs://BUCKET/runs/vq16 --config.loss.lpips_path=LPIPS.npz
  ar-gen train --config configs/imagenet256_llamagen.py:size=B,tokenizer=gs://BUCKET/runs/vq16 \\
      --workdir gs://BUCKET/runs/llamagen_b
  ar-gen train --config configs/imagenet256_llamagen.py:size=B,runlocal,tokenizer=/tmp/vq16 --workdir /tmp/llamagen_b

`tokenizer=`: a tokenizer trained with configs/imagenet256_vq16.py, or LlamaGen's released `vq_ds16_c2i.pt`
converted with `ar-gen convert-llamagen` (OUT/tokenizer). The recipe is LlamaGen's train_c2i.py (batch 256, 300
epochs, constant lr 1e-4, dropout 0.1 everywhere, bf16); XXL and 3B shard parameters over all devices
(`mesh.fsdp=-1`). Tokens are computed on the fly from center crops and flips; LlamaGen trains on codes extracted once
from ten crops and their flips (`ar-gen extract-tokens` + `--config.data.train=tokens:DIR` encodes once):
docs/recipes.md. `:runlocal`: one step of a 2-block model on 64x64 mock images over a `:runlocal` tokenizer (or, for
`ar-gen compile`, `tokenizer=configs/imagenet256_vq16.py:runlocal`).
"""

from ar_gen.families.next_token import imagenet_llamagen_config


def get_config(arg=None):
  return imagenet_llamagen_config(arg)
