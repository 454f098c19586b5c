"""Reader of VAR's released checkpoints: the multi-scale VQVAE (`vae_ch160v4096z32.pth`) and the class-conditional
VAR transformers (`var_d16.pth` .. `var_d30.pth`), into ar-gen work directories that `ar-gen sample` uses directly.

`ar-gen convert-var --vae VAE.pth --var VAR.pth --out DIR` writes `DIR/tokenizer` (model.quantizer='multiscale')
and `DIR/var` (task next_scale). Architecture sizes are read from the state dicts (width, depth, heads, codebook,
channel multipliers, phi count, the scales from VAR's level buffer); the mapping works on numpy state dicts and is
tested against golden outputs of the official VAR code (`tests/test_convert_var.py`); reading `.pth` needs torch.
VAR's `cfg` is ar-gen's `cfg_scale - 1` with the `linear` schedule (the converted config samples with VAR's cfg 1.5,
top-k 900, top-p 0.96).
"""

from __future__ import annotations

from typing import Sequence

import ml_collections
import numpy as np

from ar_gen import outputs
from ar_gen.convert import common
from tokenizers.multiscale import VAR_SCALES

StateDict = common.StateDict


def vae_params(sd: StateDict) -> dict:
  """VAR VQVAE state dict -> pure dict of ar-gen `Tokenizer` parameters (multi-scale quantizer)."""
  phi = {i: {"conv": common.conv(sd, f"quantize.quant_resi.qresi_ls.{i}")}
         for i in range(common.count(sd, "quantize.quant_resi.qresi_ls"))}
  return {"encoder": common.ldm_coder(sd, "encoder"), "decoder": common.ldm_coder(sd, "decoder"),
          "quant_conv": common.conv(sd, "quant_conv"), "post_quant_conv": common.conv(sd, "post_quant_conv"),
          "quantizer": {"vq": {"codebook": sd["quantize.embedding.weight"]}, "phi": phi}}


def vae_model_config(sd: StateDict, scales: Sequence[int] = VAR_SCALES) -> ml_collections.ConfigDict:
  """The tokenizer `model` section that reproduces a VAR VQVAE state dict's architecture."""
  if "quantize.quant_resi.qresi_ls.0.weight" not in sd:
    raise ValueError("only VAR's partially shared phi (quantize.quant_resi.qresi_ls.*) is supported")
  ch = sd["encoder.conv_in.weight"].shape[0]
  levels = common.count(sd, "encoder.down")
  mult = [sd[f"encoder.down.{lvl}.block.0.conv1.weight"].shape[0] // ch for lvl in range(levels)]
  k, d = sd["quantize.embedding.weight"].shape
  return ml_collections.ConfigDict(dict(
      channels=ch, channel_mult=tuple(mult), num_res_blocks=common.count(sd, "encoder.down.0.block"),
      z_channels=sd["encoder.conv_out.weight"].shape[0], attention=True,
      quant_conv_kernel=sd["quant_conv.weight"].shape[-1],
      multiscale=dict(codebook_size=k, code_dim=d, normalize=False, scales=tuple(scales), phi_ratio=0.5,
                      num_phi=common.count(sd, "quantize.quant_resi.qresi_ls"))))


def var_scales(sd: StateDict) -> tuple[int, ...]:
  """The scales of a VAR state dict from its level buffer `lvl_1L` (VAR's default if absent)."""
  if "lvl_1L" not in sd:
    return VAR_SCALES
  counts = np.bincount(sd["lvl_1L"].reshape(-1).astype(np.int64))
  return tuple(int(round(np.sqrt(c))) for c in counts)


def var_params(sd: StateDict) -> dict:
  """VAR transformer state dict -> pure dict of ar-gen `NextScaleModel` parameters."""
  t = lambda name: np.ascontiguousarray(sd[name].T)
  lin = lambda name: {"kernel": t(f"{name}.weight"), "bias": sd[f"{name}.bias"]}
  layers = {}
  for i in range(common.count(sd, "blocks")):
    p = f"blocks.{i}"
    layers[i] = {
        "attention": {"wqkv": {"kernel": t(f"{p}.attn.mat_qkv.weight")}, "wo": lin(f"{p}.attn.proj"),
                      "q_bias": sd[f"{p}.attn.q_bias"], "v_bias": sd[f"{p}.attn.v_bias"],
                      "log_scale": sd[f"{p}.attn.scale_mul_1H11"].reshape(-1)},
        "fc1": lin(f"{p}.ffn.fc1"), "fc2": lin(f"{p}.ffn.fc2"), "ada_lin": lin(f"{p}.ada_lin.1")}
  return {"word_embed": lin("word_embed"), "class_emb": {"embedding": sd["class_emb.weight"]},
          "lvl_embed": {"embedding": sd["lvl_embed.weight"]}, "pos_start": sd["pos_start"][0],
          "pos": sd["pos_1LC"][0], "transformer": {"layers": layers}, "head_ada": lin("head_nm.ada_lin.1"),
          "head": lin("head")}


def var_model_config(sd: StateDict) -> ml_collections.ConfigDict:
  """The next-scale `model` section of a VAR state dict (depth, width, heads, classes, MLP ratio)."""
  if "shared_ada_lin.1.weight" in sd:
    raise ValueError("VAR checkpoints with a shared AdaLN (shared_aln=True) are not supported")
  dim = sd["word_embed.weight"].shape[0]
  return ml_collections.ConfigDict(dict(
      depth=common.count(sd, "blocks"), dim=dim, num_heads=sd["blocks.0.attn.scale_mul_1H11"].shape[1],
      num_classes=sd["class_emb.weight"].shape[0] - 1, mlp_ratio=sd["blocks.0.ffn.fc1.weight"].shape[0] / dim,
      class_dropout=0.0))


VAE_FILE = "VAR's VQVAE checkpoint (vae_ch160v4096z32.pth)"
VAE_KEYS = ("encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight", "encoder.conv_out.weight",
            "quant_conv.weight", "post_quant_conv.weight", "quantize.embedding.weight", "decoder.conv_out.weight")
VAR_FILE = "a VAR transformer checkpoint (var_d16.pth .. var_d30.pth)"
VAR_KEYS = ("word_embed.weight", "class_emb.weight", "lvl_embed.weight", "pos_start", "pos_1LC",
            "blocks.0.attn.mat_qkv.weight", "blocks.0.attn.scale_mul_1H11", "blocks.0.ffn.fc1.weight", "head.weight")


def convert_state_dicts(vae_sd: StateDict, var_sd: StateDict, out: str, image_size: int = 256,
                        sources: tuple[str, str] = ("vae", "var"), overwrite: bool = False) -> dict:
  """Writes `out/tokenizer` and `out/var` work directories holding the two state dicts' weights.

  Both state dicts are mapped before anything is written; a failure after that removes what was written. An
  `out` that already holds them is refused unless `overwrite` (`ar_gen.outputs`).
  """
  claim = outputs.claim_dir(out, ("tokenizer", "var"), overwrite)
  from ar_gen.families.next_scale import default_config as next_scale_config  # pylint: disable=g-import-not-at-top
  from tokenizers.config import tokenizer_config  # pylint: disable=g-import-not-at-top
  data = dict(train="tfds:imagenet2012:train", eval="tfds:imagenet2012:validation", image_size=image_size,
              channels=3, resize="crop")
  tok_config = tokenizer_config("multiscale", **data)
  tok_config.model.update(common.mapped(lambda sd: vae_model_config(sd, var_scales(var_sd)), vae_sd, sources[0],
                                        VAE_FILE))
  tok_params = common.mapped(lambda sd: {"tokenizer": vae_params(sd)}, vae_sd, sources[0], VAE_FILE)
  model_config = common.mapped(var_model_config, var_sd, sources[1], VAR_FILE)
  model_params = common.mapped(var_params, var_sd, sources[1], VAR_FILE)

  return common.save_tokenizer_and_model(claim, out, (tok_config, tok_params), "var",
                                         lambda tok_dir: next_scale_config(tok_dir, **data), model_config,
                                         model_params, sources)


def convert(vae_path: str, var_path: str, out: str, image_size: int = 256, overwrite: bool = False) -> dict:
  """Converts VAR's VQVAE and VAR-d* checkpoints into `out/tokenizer` and `out/var` work directories."""
  outputs.claim_dir(out, ("tokenizer", "var"), overwrite)  # before the (slow) reads
  return convert_state_dicts(common.read_torch(vae_path, VAE_FILE, VAE_KEYS),
                             common.read_torch(var_path, VAR_FILE, VAR_KEYS), out, image_size, (vae_path, var_path),
                             overwrite)
