"""What every reader of released PyTorch checkpoints shares: numpy state dicts, the conv / norm / residual-block
mappings of the VQGAN-style nets (`tokenizers/nets.py`), writing parameters into a module with shape checks, and
saving the result as an ar-gen work directory.

A converter reads and maps both of its files before it writes anything, and `removed_on_failure` deletes the work
directories it created if a later step (a shape check) fails, so a failed conversion leaves no half output.
Unfit files are ValueErrors naming the file, what it should be, and the missing keys (`ar_gen/torch_files.py`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ar_gen import fileio, torch_files
from ar_gen.outputs import removed_on_failure

StateDict = dict[str, np.ndarray]


def conv_kernel(w_OIHW: np.ndarray) -> np.ndarray:
  return np.transpose(w_OIHW, (2, 3, 1, 0))


def conv(sd: StateDict, prefix: str) -> dict:
  return {"kernel": conv_kernel(sd[f"{prefix}.weight"]), "bias": sd[f"{prefix}.bias"]}


def norm(sd: StateDict, prefix: str) -> dict:
  return {"scale": sd[f"{prefix}.weight"], "bias": sd[f"{prefix}.bias"]}


def linear(sd: StateDict, prefix: str) -> dict:
  return {"kernel": np.ascontiguousarray(sd[f"{prefix}.weight"].T), "bias": sd[f"{prefix}.bias"]}


def vit_block(sd: StateDict, prefix: str) -> dict:
  """A timm / DINOv2 ViT block -> `ar_gen.nn.vit.ViTBlock` (the key bias dropped: softmax removes it; LayerScale's
  `ls1` / `ls2.gamma` when the block has them)."""
  qkv_w, qkv_b = sd[f"{prefix}.attn.qkv.weight"], sd[f"{prefix}.attn.qkv.bias"]
  dim = qkv_w.shape[1]
  out = {"norm1": norm(sd, f"{prefix}.norm1"), "norm2": norm(sd, f"{prefix}.norm2"),
         "attention": {"wqkv": {"kernel": np.ascontiguousarray(qkv_w.T)}, "wo": linear(sd, f"{prefix}.attn.proj"),
                       "q_bias": qkv_b[:dim], "v_bias": qkv_b[2 * dim:]},
         "fc1": linear(sd, f"{prefix}.mlp.fc1"), "fc2": linear(sd, f"{prefix}.mlp.fc2")}
  if f"{prefix}.ls1.gamma" in sd:
    out.update(ls1=sd[f"{prefix}.ls1.gamma"], ls2=sd[f"{prefix}.ls2.gamma"])
  return out


def res(sd: StateDict, prefix: str) -> dict:
  out = {"norm1": norm(sd, f"{prefix}.norm1"), "conv1": conv(sd, f"{prefix}.conv1"),
         "norm2": norm(sd, f"{prefix}.norm2"), "conv2": conv(sd, f"{prefix}.conv2")}
  if f"{prefix}.nin_shortcut.weight" in sd:
    out["shortcut"] = conv(sd, f"{prefix}.nin_shortcut")
  return out


def count(sd: StateDict, prefix: str) -> int:
  return len({k[len(prefix) + 1:].split(".")[0] for k in sd if k.startswith(prefix + ".")})


def attention(sd: StateDict, prefix: str) -> dict:
  """A VQGAN / LDM AttnBlock -> ar-gen's (one fused qkv conv): VAR's is fused already, LDM's and LlamaGen's have
  separate q, k, v convs."""
  if f"{prefix}.qkv.weight" in sd:
    qkv = conv(sd, f"{prefix}.qkv")
  else:
    qkv = {"kernel": conv_kernel(np.concatenate([sd[f"{prefix}.{n}.weight"] for n in "qkv"], axis=0)),
           "bias": np.concatenate([sd[f"{prefix}.{n}.bias"] for n in "qkv"], axis=0)}
  return {"norm": norm(sd, f"{prefix}.norm"), "qkv": qkv, "proj": conv(sd, f"{prefix}.proj_out")}


def _level_blocks(sd: StateDict, prefix: str) -> list[dict]:
  """The residual blocks of one level, each followed by its attention block when the level has them."""
  blocks = []
  for j in range(count(sd, f"{prefix}.block")):
    blocks.append(res(sd, f"{prefix}.block.{j}"))
    if f"{prefix}.attn.{j}.norm.weight" in sd:
      blocks.append(attention(sd, f"{prefix}.attn.{j}"))
  return blocks


def _mid(sd: StateDict, name: str) -> dict:
  return {0: res(sd, f"{name}.mid.block_1"), 1: attention(sd, f"{name}.mid.attn_1"),
          2: res(sd, f"{name}.mid.block_2")}


def ldm_coder(sd: StateDict, name: str) -> dict:
  """A taming / LDM-style Encoder ('encoder': levels `down.i`) or Decoder ('decoder': levels `up.i`, run from the
  last) of VAR's VQVAE or MAR's KL-16 -> ar-gen's flat block list of the same order."""
  blocks = []
  if name == "encoder":
    levels = count(sd, "encoder.down")
    for lvl in range(levels):
      blocks += _level_blocks(sd, f"encoder.down.{lvl}")
      if lvl < levels - 1:  # ar-gen's downsample is a bare strided conv (same padding: 0 before, 1 after)
        blocks.append(conv(sd, f"encoder.down.{lvl}.downsample.conv"))
  else:
    for lvl in reversed(range(count(sd, "decoder.up"))):
      blocks += _level_blocks(sd, f"decoder.up.{lvl}")
      if lvl > 0:
        blocks.append({"conv": conv(sd, f"decoder.up.{lvl}.upsample.conv")})
  return {"conv_in": conv(sd, f"{name}.conv_in"), "blocks": dict(enumerate(blocks)), "mid": _mid(sd, name),
          "norm_out": norm(sd, f"{name}.norm_out"), "conv_out": conv(sd, f"{name}.conv_out")}


def load_params(module: nnx.Module, params: dict, source: str) -> nnx.Module:
  """Writes a pure dict of parameters into `module`, checking that every shape matches (errors name `source`)."""
  state = nnx.state(module, nnx.Param)
  expected = state.to_pure_dict()
  flat_expected = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(expected)[0]}
  flat_given = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  missing = sorted(set(flat_expected) - set(flat_given))
  extra = sorted(set(flat_given) - set(flat_expected))
  if missing or extra:
    raise ValueError(f"{source}: parameters do not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
  for key, value in flat_expected.items():
    if tuple(value.shape) != tuple(np.shape(flat_given[key])):
      raise ValueError(f"{source}: {key} has shape {np.shape(flat_given[key])}, the model needs {value.shape}")
  converted = jax.tree.map(lambda e, g: jnp.asarray(g, e.dtype), expected, params)
  nnx.replace_by_pure_dict(state, converted)
  nnx.update(module, state)
  return module


def read_torch(path: str, expected: str, required: Iterable[str] = (), wrapper: str | None = None) -> StateDict:
  """A PyTorch checkpoint as a numpy state dict (see `ar_gen.torch_files.load_state_dict`); errors name `path`."""
  return torch_files.load_state_dict(path, expected, required, wrapper)


def mapped(fn: Callable[[StateDict], Any], sd: StateDict, path: str, expected: str) -> Any:
  """`fn(sd)`, with its failures on an unfit state dict raised as ValueErrors that name `path`.

  A key that `fn` looks for and `sd` lacks is named; an unsupported variant or misshapen tensor keeps its message.
  """
  try:
    return fn(sd)
  except KeyError as e:
    raise ValueError(f"{path} is not {expected}: it lacks {e.args[0]}") from None
  except (ValueError, IndexError) as e:
    raise ValueError(f"{path} does not fit {expected}: {e}") from None


def save_tokenizer_and_model(claim: Any, out: str, tokenizer: tuple[ml_collections.ConfigDict, dict],
                             model_name: str, family_config: Callable[[str], ml_collections.ConfigDict],
                             model_updates: dict, model_params: dict, sources: tuple[str, str]) -> dict:
  """Writes `out/tokenizer` and `out/MODEL_NAME` (its config: `family_config(tokenizer_dir)` with its `model`
  section updated by `model_updates`) once every input is mapped: the claimed earlier output goes first, and a
  failure removes what was written."""
  tok_dir, model_dir = fileio.join(out, "tokenizer"), fileio.join(out, model_name)
  with removed_on_failure(out, tok_dir, model_dir):
    claim.clear()
    save_workdir(*tokenizer, tok_dir, sources[0])
    model_config = family_config(tok_dir)
    model_config.model.update(model_updates)
    save_workdir(model_config, model_params, model_dir, sources[1])
  return {"tokenizer": tok_dir, model_name: model_dir}


def save_workdir(config: ml_collections.ConfigDict, params: dict, workdir: str, source: str) -> str:
  """A work directory (config.json + checkpoint at step 0) whose model holds `params`."""
  from ar_gen.runs import run as run_lib  # pylint: disable=g-import-not-at-top
  return run_lib.save_workdir(config, workdir, lambda module: load_params(module, params, source))
