"""NFIG-310M on ImageNet 256x256: next-frequency prediction, one band per step over the 10 bands (680 tokens) of a
frequency-band tokenizer, VAR-d16's generator (16 blocks, width 1024, 16 heads), class-conditional.

  ar-gen train --config configs/imagenet256_nfig.py:tokenizer=RUNS/nfig_tok --workdir gs://BUCKET/runs/nfig
  ar-gen train --config configs/imagenet256_nfig.py:runlocal,tokenizer=/tmp/nfig_tok --workdir /tmp/nfig

RUNS/nfig_tok: a tokenizer trained with configs/imagenet256_nfig_tok.py. The paper's numbers: lr 8e-5 per 256
images, batch 768, 350 epochs; sampling with guidance 4.5 (ramped over the bands as VAR's) and top-k 990. What
the paper leaves open takes VAR-d16's recipe (ar_gen/families/next_frequency.py, docs/families.md). `:runlocal`:
one step of a 2-block model on 64x64 mock images over a `:runlocal` tokenizer.
"""

from ar_gen.families.next_frequency import imagenet_nfig_config


def get_config(arg=None):
  return imagenet_nfig_config(arg)
