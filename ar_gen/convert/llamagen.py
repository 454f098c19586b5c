"""Reader of LlamaGen's released checkpoints: the VQ tokenizer (`vq_ds16_c2i.pt`) and the class-conditional GPTs
(`c2i_B_256.pt` .. `c2i_XXL_384.pt`), into ar-gen work directories that `ar-gen sample` uses directly.

`ar-gen convert-llamagen --vq VQ.pt --gpt GPT.pt --size B --out DIR` writes `DIR/tokenizer` and `DIR/gpt`
(config.json + an Orbax checkpoint each). The mapping works on numpy state dicts, so it is tested against golden
outputs of the official code without PyTorch (`tests/test_convert_llamagen.py`); reading `.pt` files needs torch.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from ar_gen import outputs
from ar_gen.convert import common

StateDict = common.StateDict


def _levels(sd: StateDict, prefix: str) -> int:
  return len({k.split(".")[2] for k in sd if k.startswith(f"{prefix}.conv_blocks.")})


def _coder(sd: StateDict, name: str) -> dict:
  """LlamaGen's Encoder or Decoder ('encoder' / 'decoder') -> ar-gen's flat block list of the same order."""
  blocks = []
  for lvl in range(_levels(sd, name)):
    p = f"{name}.conv_blocks.{lvl}"
    for j in range(common.count(sd, f"{p}.res")):
      blocks.append(common.res(sd, f"{p}.res.{j}"))
      if f"{p}.attn.{j}.q.weight" in sd:
        blocks.append(common.attention(sd, f"{p}.attn.{j}"))
    if f"{p}.downsample.conv.weight" in sd:  # ar-gen's downsample is a bare strided conv
      blocks.append(common.conv(sd, f"{p}.downsample.conv"))
    if f"{p}.upsample.conv.weight" in sd:  # ar-gen's Upsample module holds its conv
      blocks.append({"conv": common.conv(sd, f"{p}.upsample.conv")})
  return {"conv_in": common.conv(sd, f"{name}.conv_in"), "blocks": dict(enumerate(blocks)),
          "mid": {0: common.res(sd, f"{name}.mid.0"), 1: common.attention(sd, f"{name}.mid.1"),
                  2: common.res(sd, f"{name}.mid.2")},
          "norm_out": common.norm(sd, f"{name}.norm_out"), "conv_out": common.conv(sd, f"{name}.conv_out")}


def vq_params(sd: StateDict) -> dict:
  """LlamaGen VQModel state dict -> pure dict of ar-gen `Tokenizer` parameters."""
  return {"encoder": _coder(sd, "encoder"), "decoder": _coder(sd, "decoder"),
          "quant_conv": common.conv(sd, "quant_conv"), "post_quant_conv": common.conv(sd, "post_quant_conv"),
          "quantizer": {"codebook": sd["quantize.embedding.weight"]}}


def vq_model_config(sd: StateDict) -> ml_collections.ConfigDict:
  """The `model` section that reproduces a LlamaGen VQ state dict's architecture."""
  levels = _levels(sd, "encoder")
  ch = sd["encoder.conv_in.weight"].shape[0]
  mult = [sd[f"encoder.conv_blocks.{l}.res.0.conv1.weight"].shape[0] // ch for l in range(levels)]
  k, d = sd["quantize.embedding.weight"].shape
  return ml_collections.ConfigDict(dict(
      channels=ch, channel_mult=tuple(mult), num_res_blocks=common.count(sd, "encoder.conv_blocks.0.res"),
      z_channels=sd["encoder.conv_out.weight"].shape[0], attention=True, vq=dict(codebook_size=k, code_dim=d)))


def gpt_params(sd: StateDict) -> dict:
  """LlamaGen GPT (c2i) state dict -> pure dict of ar-gen `NextTokenModel` parameters."""
  t = lambda name: np.ascontiguousarray(sd[name].T)
  layers = {}
  for i in range(common.count(sd, "layers")):
    p = f"layers.{i}"
    layers[i] = {
        "attention": {"wqkv": {"kernel": t(f"{p}.attention.wqkv.weight")},
                      "wo": {"kernel": t(f"{p}.attention.wo.weight")}},
        "feed_forward": {n: {"kernel": t(f"{p}.feed_forward.{n}.weight")} for n in ("w1", "w2", "w3")},
        "attention_norm": {"weight": sd[f"{p}.attention_norm.weight"]},
        "ffn_norm": {"weight": sd[f"{p}.ffn_norm.weight"]}}
  return {"cls_embedding": {"embedding": sd["cls_embedding.embedding_table.weight"]},
          "tok_embeddings": {"embedding": sd["tok_embeddings.weight"]},
          "transformer": {"layers": layers}, "norm": {"weight": sd["norm.weight"]},
          "output": {"kernel": t("output.weight")}}


VQ_FILE = "LlamaGen's VQ tokenizer checkpoint (vq_ds16_c2i.pt)"
VQ_KEYS = ("encoder.conv_in.weight", "encoder.conv_blocks.0.res.0.conv1.weight", "encoder.conv_out.weight",
           "quant_conv.weight", "post_quant_conv.weight", "quantize.embedding.weight", "decoder.conv_out.weight")
GPT_FILE = "a LlamaGen class-conditional GPT checkpoint (c2i_B_256.pt .. c2i_XXL_384.pt)"
GPT_KEYS = ("cls_embedding.embedding_table.weight", "tok_embeddings.weight", "layers.0.attention.wqkv.weight",
            "norm.weight", "output.weight")


def check_size(sd: StateDict, size: str, path: str) -> None:
  """Raises ValueError naming `path` if the GPT's depth and width are not those of LlamaGen's preset `size`."""
  from ar_gen.models.next_token import PRESETS  # pylint: disable=g-import-not-at-top
  depth, dim = common.count(sd, "layers"), sd["tok_embeddings.weight"].shape[1]
  if PRESETS[size][:2] != (depth, dim):
    found = [name for name, preset in PRESETS.items() if preset[:2] == (depth, dim)]
    raise ValueError(f"{path} holds a GPT of {depth} layers of width {dim} "
                     f"({'size ' + found[0] if found else 'no LlamaGen size'}), not --size {size} "
                     f"({PRESETS[size][0]} layers of width {PRESETS[size][1]})")


def convert(vq_path: str, gpt_path: str, size: str, image_size: int, out: str, overwrite: bool = False) -> dict:
  """Converts LlamaGen's VQ and c2i GPT checkpoints into `out/tokenizer` and `out/gpt` work directories.

  Both files are read and mapped before anything is written; a failure after that removes what was written. An
  `out` that already holds them is refused unless `overwrite` (`ar_gen.outputs`).
  """
  claim = outputs.claim_dir(out, ("tokenizer", "gpt"), overwrite)
  from ar_gen.families.next_token import default_config as next_token_config  # pylint: disable=g-import-not-at-top
  from tokenizers.config import tokenizer_config  # pylint: disable=g-import-not-at-top
  data = dict(train="tfds:imagenet2012:train", eval="tfds:imagenet2012:validation", image_size=image_size,
              channels=3, resize="crop")
  vq_sd = common.read_torch(vq_path, VQ_FILE, VQ_KEYS)
  gpt_sd = common.read_torch(gpt_path, GPT_FILE, GPT_KEYS)
  tok_params = common.mapped(lambda sd: {"tokenizer": vq_params(sd)}, vq_sd, vq_path, VQ_FILE)
  tok_config = tokenizer_config("vq", **data)
  tok_config.model.update(common.mapped(vq_model_config, vq_sd, vq_path, VQ_FILE))
  model_params = common.mapped(gpt_params, gpt_sd, gpt_path, GPT_FILE)
  check_size(gpt_sd, size, gpt_path)

  model_updates = dict(size=size, num_classes=gpt_sd["cls_embedding.embedding_table.weight"].shape[0] - 1)
  return common.save_tokenizer_and_model(claim, out, (tok_config, tok_params), "gpt",
                                         lambda tok_dir: next_token_config(tok_dir, **data), model_updates,
                                         model_params, (vq_path, gpt_path))
