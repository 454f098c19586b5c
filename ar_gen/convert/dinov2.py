"""DINOv2's released ViT checkpoints (e.g. `dinov2_vitb14_reg4_pretrain.pth`, DiGIT's encoder) -> a frozen feature
encoder work directory (`tokenizers/ssl.py`, task `feature_encoder`, `ssl.objective='none'`).

The released names are DINOv2's (`cls_token`, `pos_embed` [1, 1 + 37 * 37, C] with the class token's slot first,
`register_tokens`, `mask_token` (unused: dropped), `patch_embed.proj`, `blocks.N.{norm1, attn.qkv, attn.proj,
ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}`, `norm`). As timm does when it loads them, the class token's
position embedding is added to the token, and the patches' table is resized to the grid of `input_size`
(antialiased bicubic, `tokenizers.dinov2.resample_pos_embed`). Heads are not stored in the weights: DINOv2's are
64 wide (`num_heads = dim / 64` unless given).
"""

from __future__ import annotations

import ml_collections
import numpy as np

from ar_gen import fileio, outputs
from ar_gen.convert import common
from ar_gen.errors import UserError
from ar_gen.runs import run as run_lib
from tokenizers.dinov2 import ARCHS, block_index, resample_pos_embed
from tokenizers.ssl import feature_encoder_config

StateDict = common.StateDict
DINOV2_FILE = "a DINOv2 ViT checkpoint (e.g. dinov2_vitb14_reg4_pretrain.pth)"
DINOV2_KEYS = ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight", "blocks.0.attn.qkv.weight")
HEAD_DIM = 64


def encoder_sizes(sd: StateDict, num_heads: int | None = None) -> dict:
  """{patch_size, dim, depth, num_heads, num_registers} of a state dict."""
  dim, _, patch, _ = sd["patch_embed.proj.weight"].shape
  depth = common.count(sd, "blocks")
  registers = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
  return dict(patch_size=int(patch), dim=int(dim), depth=depth, num_heads=int(num_heads or dim // HEAD_DIM),
              num_registers=int(registers))


def encoder_params(sd: StateDict, grid: tuple[int, int]) -> dict:
  """The released state dict -> `FeatureEncoder` parameters for a patch grid."""
  pos = sd["pos_embed"]
  dim = pos.shape[-1]
  cls = sd["cls_token"] + pos[:, :1]
  registers = sd.get("register_tokens", np.zeros((1, 0, dim), pos.dtype))
  return {"patch_embed": common.conv(sd, "patch_embed.proj"), "cls_token": cls, "reg_tokens": registers,
          "pos_embed": resample_pos_embed(pos[:, 1:], grid),
          "layers": {i: common.vit_block(sd, f"blocks.{i}") for i in range(common.count(sd, "blocks"))},
          "norm": common.norm(sd, "norm")}


def encoder_config(sizes: dict, input_size: int, layer: int, image_size: int) -> ml_collections.ConfigDict:
  """The work directory's config: ImageNet data at `image_size`, the encoder's sizes (the `vitb14_reg4` preset
  when they are its), not trainable (`ssl.objective='none'`)."""
  c = feature_encoder_config(train="tfds:imagenet2012:train", eval="tfds:imagenet2012:validation",
                             image_size=image_size, channels=3, resize="crop")
  arch = next((name for name, s in ARCHS.items() if s == sizes), "custom")
  c.encoder.update(arch=arch, input_size=input_size, layer=layer, **sizes)
  c.ssl.objective = "none"
  return c


def _filled(module, params: dict, source: str):
  """The run's module with the encoder's weights (SimCLR's projection head, unused, keeps its initial values)."""
  common.load_params(module.encoder, params, source)
  return module


def convert_state_dict(sd: StateDict, out: str, source: str, input_size: int = 224, layer: int = -3,
                       image_size: int = 256, num_heads: int | None = None) -> dict:
  """Writes OUT (a `feature_encoder` work directory) from a DINOv2 state dict."""
  sizes = common.mapped(lambda s: encoder_sizes(s, num_heads), sd, source, DINOV2_FILE)
  block_index(layer, sizes["depth"])
  if input_size % sizes["patch_size"]:
    raise UserError(f"--input-size {input_size} is not a multiple of the checkpoint's patch size "
                    f"{sizes['patch_size']}")
  grid = (input_size // sizes["patch_size"],) * 2
  params = common.mapped(lambda s: encoder_params(s, grid), sd, source, DINOV2_FILE)
  config = encoder_config(sizes, input_size, layer, image_size)
  with outputs.removed_on_failure(out, fileio.join(out, "config.json"), fileio.join(out, "checkpoints")):
    run_lib.save_workdir(config, out, lambda module: _filled(module, params, source))
  return {"out": fileio.absolute(out), "arch": config.encoder.arch, "grid": list(grid), **sizes}


def convert(path: str, out: str, input_size: int = 224, layer: int = -3, image_size: int = 256,
            num_heads: int | None = None) -> dict:
  """Converts a released DINOv2 checkpoint into the encoder work directory OUT (a new or empty directory)."""
  if fileio.exists(out) and (not fileio.isdir(out) or fileio.listdir(out)):
    raise UserError(f"--out {out} exists and is not an empty directory: the encoder goes into a new one")
  sd = common.read_torch(path, DINOV2_FILE, DINOV2_KEYS)
  return convert_state_dict(sd, out, path, input_size, layer, image_size, num_heads)
