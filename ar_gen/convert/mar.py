"""Reader of MAR's released weights (LTH14/mar): the state dict of a `MAR` model (transformer and diffusion head)
as ar-gen `MARModel` parameters. Works on numpy state dicts, so it is tested against golden outputs of the official
code without PyTorch (`tests/test_mar_golden.py`).

Mapping: torch Linear weights [out, in] are transposed to [in, out]; timm's fused qkv goes to `wqkv` with the query
and value biases (its key bias adds the same number to every logit of a query and is dropped); `fake_latent`,
the three position embeddings and the mask token are copied. `vae_params` maps kl16.ckpt's LDM autoencoder (levels
`down.i` / `up.i`, separate q, k, v convs fused into one) onto a `Tokenizer` with the KL bottleneck; its decoder has
no attention after the lowest-resolution blocks (`decoder_level_attention=False`).
`ar-gen convert-mar --vae kl16.ckpt --mar checkpoint-last.pth --size B --out DIR` writes `DIR/tokenizer` (scale
factor 0.2325) and `DIR/mar` (the EMA weights unless `--no-ema`), which `ar-gen sample` uses directly.
"""

from __future__ import annotations

from ar_gen import outputs
from ar_gen.convert import common
from ar_gen.models.mar import PRESETS

StateDict = common.StateDict


_linear, _norm = common.linear, common.norm


def head_params(sd: StateDict, prefix: str = "diffloss.net") -> dict:
  """MAR's SimpleMLPAdaLN -> `DenoisingMLP` parameters."""
  count = len({k[len(prefix) + 12:].split(".")[0] for k in sd if k.startswith(f"{prefix}.res_blocks.")})
  block = lambda p: {"in_ln": _norm(sd, f"{p}.in_ln"), "fc1": _linear(sd, f"{p}.mlp.0"),
                     "fc2": _linear(sd, f"{p}.mlp.2"), "ada": _linear(sd, f"{p}.adaLN_modulation.1")}
  blocks = {i: block(f"{prefix}.res_blocks.{i}") for i in range(count)}
  return {"time_fc1": _linear(sd, f"{prefix}.time_embed.mlp.0"), "time_fc2": _linear(sd, f"{prefix}.time_embed.mlp.2"),
          "cond_embed": _linear(sd, f"{prefix}.cond_embed"), "input_proj": _linear(sd, f"{prefix}.input_proj"),
          "blocks": blocks, "final_ada": _linear(sd, f"{prefix}.final_layer.adaLN_modulation.1"),
          "final": _linear(sd, f"{prefix}.final_layer.linear")}


def _blocks(sd: StateDict, name: str) -> dict:
  count = len({k.split(".")[1] for k in sd if k.startswith(f"{name}.")})
  return {"layers": {i: common.vit_block(sd, f"{name}.{i}") for i in range(count)}}


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


VAE_FILE = "MAR's KL-16 VAE (kl16.ckpt: LDM's AutoencoderKL, its 'model' entry)"
MAR_FILE = "a MAR checkpoint (checkpoint-last.pth of mar_base / mar_large / mar_huge)"
VAE_KEYS = ("encoder.conv_in.weight", "decoder.conv_in.weight", "quant_conv.weight", "post_quant_conv.weight")
MAR_KEYS = ("class_emb.weight", "fake_latent", "z_proj.weight", "encoder_pos_embed_learned",
            "encoder_blocks.0.attn.qkv.weight", "decoder_blocks.0.attn.qkv.weight", "diffusion_pos_embed_learned",
            "diffloss.net.input_proj.weight")
KL16_SCALE = 0.2325  # MAR's main_mar.py: latents = vae.encode(x).sample() * 0.2325


def vae_model_config(sd: StateDict) -> dict:
  """The tokenizer `model` section of an LDM KL autoencoder state dict."""
  levels = common.count(sd, "encoder.down")
  ch = sd["encoder.conv_in.weight"].shape[0]
  mult = [sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels)]
  embed = sd["post_quant_conv.weight"].shape[1]
  return dict(channels=ch, channel_mult=tuple(mult), num_res_blocks=common.count(sd, "encoder.down.0.block"),
              z_channels=sd["decoder.conv_in.weight"].shape[1], attention=True,
              decoder_level_attention=any(k.startswith("decoder.up.") and ".attn." in k for k in sd),
              kl=dict(embed_dim=embed, scale_factor=KL16_SCALE))


def mar_model_config(sd: StateDict, size: str, num_tokens: int) -> dict:
  """The MAR `model` section of a state dict, checked against MAR's preset `size`."""
  depth, dim = common.count(sd, "encoder_blocks"), sd["class_emb.weight"].shape[1]
  head_depth, head_width = common.count(sd, "diffloss.net.res_blocks"), sd["diffloss.net.input_proj.weight"].shape[0]
  found = [name for name, p in PRESETS.items() if (p[0], p[1], p[3], p[4]) == (depth, dim, head_depth, head_width)]
  if size not in found:
    raise ValueError(f"the checkpoint holds a MAR of {depth} blocks of width {dim} with a {head_depth}-block head "
                     f"of width {head_width} ({'size ' + found[0] if found else 'no MAR size'}), not --size {size}")
  return dict(size=size, num_classes=sd["class_emb.weight"].shape[0],
              buffer_size=sd["encoder_pos_embed_learned"].shape[1] - num_tokens)


def convert_state_dicts(vae_sd: StateDict, mar_sd: StateDict, size: str, out: str, image_size: int = 256,
                        sources: tuple[str, str] = ("vae", "mar"), overwrite: bool = False) -> dict:
  """Writes `out/tokenizer` and `out/mar` work directories holding the two state dicts' weights; both are mapped
  before anything is written, and a failure after that removes what was written."""
  claim = outputs.claim_dir(out, ("tokenizer", "mar"), overwrite)
  from ar_gen.families.mar import default_config as mar_config  # pylint: disable=g-import-not-at-top
  from tokenizers.config import tokenizer_config  # pylint: disable=g-import-not-at-top
  data = dict(train="tfds:imagenet2012:train", eval="tfds:imagenet2012:validation", image_size=image_size,
              channels=3, resize="crop")
  tok_config = tokenizer_config("kl", **data)
  tok_model = common.mapped(vae_model_config, vae_sd, sources[0], VAE_FILE)
  tok_config.model.kl.update(tok_model.pop("kl"))
  tok_config.model.update(tok_model)
  tok_params = common.mapped(lambda sd: {"tokenizer": vae_params(sd)}, vae_sd, sources[0], VAE_FILE)
  downsample = 2 ** (len(tok_config.model.channel_mult) - 1)
  num_tokens = (image_size // downsample) ** 2
  model_config = common.mapped(lambda sd: mar_model_config(sd, size, num_tokens), mar_sd, sources[1], MAR_FILE)
  model_params = common.mapped(mar_params, mar_sd, sources[1], MAR_FILE)

  return common.save_tokenizer_and_model(claim, out, (tok_config, tok_params), "mar",
                                         lambda tok_dir: mar_config(tok_dir, **data), model_config,
                                         model_params, sources)


def convert(vae_path: str, mar_path: str, size: str, out: str, ema: bool = True, image_size: int = 256,
            overwrite: bool = False) -> dict:
  """Converts kl16.ckpt and a MAR checkpoint (its EMA weights unless `ema=False`) into work directories."""
  outputs.claim_dir(out, ("tokenizer", "mar"), overwrite)  # before the (slow) reads
  vae_sd = common.read_torch(vae_path, VAE_FILE, VAE_KEYS)
  mar_sd = common.read_torch(mar_path, MAR_FILE, MAR_KEYS, wrapper="model_ema" if ema else "model")
  return convert_state_dicts(vae_sd, mar_sd, size, out, image_size, (vae_path, mar_path), overwrite)
