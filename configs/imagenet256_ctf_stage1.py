"""CTF stage 1 on ImageNet 256x256: LlamaGen-B / L / XL (`:size=S`) over the K = 512 coarse labels of LlamaGen's
VQ-16 (16x16 tokens, 16384 codes clustered on the sphere), class-conditional next-token prediction.

  ar-gen convert-llamagen vq_ds16_c2i.pt c2i_B_256.pt --out runs/llamagen     # or train configs/imagenet256_vq16.py
  ar-gen cluster-codebook --workdir runs/llamagen/tokenizer --k 512 --out runs/imagenet256_ctf_k512
  ar-gen train --config configs/imagenet256_ctf_stage1.py:size=L,tokenizer=runs/imagenet256_ctf_k512 \\
      --workdir gs://BUCKET/runs/ctf_stage1_L

LlamaGen's recipe (configs/imagenet256_llamagen.py) with a K-way embedding and head (L: 342.9M -> 310.4M, as the paper's 343 -> 310);
sampling defaults are CTF's (guidance 2.0, temperature 1.1). Stage 2: configs/imagenet256_ctf.py.
"""

from ar_gen.families.coarse_to_fine import imagenet_ctf_stage1_config


def get_config(arg=None):
  return imagenet_ctf_stage1_config(arg)
