"""CTF stage 2 on ImageNet 256x256: a bidirectional transformer of LlamaGen-L's sizes (326.7M; `:size=S` to change)
that predicts all 256 fine VQ-16 tokens in one pass from the 256 coarse labels and the class.

  ar-gen train --config configs/imagenet256_ctf.py:tokenizer=runs/imagenet256_ctf_k512,stage1=RUNS/ctf_stage1_L \\
      --workdir gs://BUCKET/runs/ctf_stage2
  ar-gen sample --workdir gs://BUCKET/runs/ctf_stage2 --num-images 50000 --batch-size 64 --out samples/ctf_L

Trained on ground-truth coarse labels (table[VQ ids]) with LlamaGen's recipe (the paper gives no stage-2
schedule); logits masked to each label's cluster (`model.cluster_mask`). Sampling: stage 1 with guidance 2.0 and
temperature 1.1, stage 2 with temperature 1.1 and every token (`sample.fine_temperature`, `sample.fine_top_k`).
`stage1=` may be empty while stage 1 still trains; `ar-gen sample` then needs --config.frozen.stage1=DIR.
"""

from ar_gen.families.coarse_to_fine import imagenet_ctf_config


def get_config(arg=None):
  return imagenet_ctf_config(arg)
