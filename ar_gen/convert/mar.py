"""Reader of MAR's released weights (LTH14/mar): the state dict of a `MAR` model (transformer and diffusion head)
as ar-gen `MARModel` parameters. Works on numpy state dicts, so it is tested against golden outputs of the official
code without PyTorch (`tests/test_mar_golden.py`).

Mapping: torch Linear weights [out, in] are transposed to [in, out]; timm's fused qkv goes to `wqkv` with the query
and value biases (its key bias adds the same number to every logit of a query and is dropped); `fake_latent`,
the three position embeddings and the mask token are copied. `vae_params` maps kl16.ckpt's LDM autoencoder (levels
`down.i` / `up.i`, separate q, k, v convs fused into one) onto a `Tokenizer` with the KL bottleneck; its decoder has
no attention after the lowest-resolution blocks (`decoder_level_attention=False`). The `ar-gen convert-mar`
command that writes work directories from the .pth / .ckpt files is not written yet.
"""

from __future__ import annotations

import numpy as np

from ar_gen.convert import common

StateDict = common.StateDict


def _linear(sd: StateDict, prefix: str) -> dict:
  return {"kernel": np.ascontiguousarray(sd[f"{prefix}.weight"].T), "bias": sd[f"{prefix}.bias"]}


def _norm(sd: StateDict, prefix: str) -> dict:
  return {"scale": sd[f"{prefix}.weight"], "bias": sd[f"{prefix}.bias"]}


def head_params(sd: StateDict, prefix: str = "diffloss.net") -> dict:
  """MAR's SimpleMLPAdaLN -> `DenoisingMLP` parameters."""
  count = len({k[len(prefix) + 12:].split(".")[0] for k in sd if k.startswith(f"{prefix}.res_blocks.")})
  blocks = {i: {"in_ln": _norm(sd, f"{prefix}.res_blocks.{i}.in_ln"), "fc1": _linear(sd, f"{prefix}.res_blocks.{i}.mlp.0"),
                "fc2": _linear(sd, f"{prefix}.res_blocks.{i}.mlp.2"),
                "ada": _linear(sd, f"{prefix}.res_blocks.{i}.adaLN_modulation.1")} for i in range(count)}
  return {"time_fc1": _linear(sd, f"{prefix}.time_embed.mlp.0"), "time_fc2": _linear(sd, f"{prefix}.time_embed.mlp.2"),
          "cond_embed": _linear(sd, f"{prefix}.cond_embed"), "input_proj": _linear(sd, f"{prefix}.input_proj"),
          "blocks": blocks, "final_ada": _linear(sd, f"{prefix}.final_layer.adaLN_modulation.1"),
          "final": _linear(sd, f"{prefix}.final_layer.linear")}


def _vit_block(sd: StateDict, prefix: str) -> dict:
  qkv_w, qkv_b = sd[f"{prefix}.attn.qkv.weight"], sd[f"{prefix}.attn.qkv.bias"]
  dim = qkv_w.shape[1]
  return {"norm1": _norm(sd, f"{prefix}.norm1"), "norm2": _norm(sd, f"{prefix}.norm2"),
          "attention": {"wqkv": {"kernel": np.ascontiguousarray(qkv_w.T)}, "wo": _linear(sd, f"{prefix}.attn.proj"),
                        "q_bias": qkv_b[:dim], "v_bias": qkv_b[2 * dim:]},
          "fc1": _linear(sd, f"{prefix}.mlp.fc1"), "fc2": _linear(sd, f"{prefix}.mlp.fc2")}


def _blocks(sd: StateDict, name: str) -> dict:
  count = len({k.split(".")[1] for k in sd if k.startswith(f"{name}.")})
  return {"layers": {i: _vit_block(sd, f"{name}.{i}") for i in range(count)}}


def mar_params(sd: StateDict) -> dict:
  """MAR's state dict (`model` or `model_ema` of checkpoint-last.pth) -> `MARModel` parameters."""
  return {"class_emb": {"embedding": sd["class_emb.weight"]}, "fake_latent": sd["fake_latent"],
          "z_proj": _linear(sd, "z_proj"), "z_proj_ln": _norm(sd, "z_proj_ln"),
          "encoder_pos": sd["encoder_pos_embed_learned"], "encoder": _blocks(sd, "encoder_blocks"),
          "encoder_norm": _norm(sd, "encoder_norm"), "decoder_embed": _linear(sd, "decoder_embed"),
          "mask_token": sd["mask_token"], "decoder_pos": sd["decoder_pos_embed_learned"],
          "decoder": _blocks(sd, "decoder_blocks"), "decoder_norm": _norm(sd, "decoder_norm"),
          "diffusion_pos": sd["diffusion_pos_embed_learned"], "head": head_params(sd)}


def vae_params(sd: StateDict) -> dict:
  """MAR's KL-16 (LDM's AutoencoderKL, the `model` of kl16.ckpt) -> ar-gen `Tokenizer` parameters (KL bottleneck)."""
  return {"encoder": common.ldm_coder(sd, "encoder"), "decoder": common.ldm_coder(sd, "decoder"),
          "quant_conv": common.conv(sd, "quant_conv"), "post_quant_conv": common.conv(sd, "post_quant_conv")}
