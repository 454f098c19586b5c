"""Config defaults of the AR model families (used by configs/*.py)."""

import ml_collections

from ar_gen.config import base_config


def next_token_config(tokenizer_workdir: str, **data) -> ml_collections.ConfigDict:
  """A next-token training config with every key and its default.

  model: `size` (B, L, XL, XXL: LlamaGen's presets; or 'custom' with depth, dim, num_heads), class / token
  dropout, QK-norm, attention implementation. sample: the sampling defaults of `ar-gen sample` and of the
  training-time sample grids.
  """
  c = base_config(**data)
  c.task = "next_token"
  c.tokenizer_workdir = tokenizer_workdir
  c.model = ml_collections.ConfigDict(dict(
      size="B", depth=12, dim=768, num_heads=12, num_kv_heads=0, mlp_multiple_of=256, num_classes=1000, class_dropout=0.1,
      token_dropout=0.1, qk_norm=False, attn_impl="auto", rope_base=10000.0, norm_eps=1e-5, dtype="float32",
      param_dtype="float32"))
  c.sample = ml_collections.ConfigDict(dict(
      temperature=1.0, top_k=0, top_p=1.0, cfg_scale=2.0, cfg_schedule="constant", cfg_interval=(0.0, 1.0)))
  c.optimizer.update(lr=1e-4, weight_decay=0.05, b1=0.9, b2=0.95)
  return c


def next_scale_config(tokenizer_workdir: str, **data) -> ml_collections.ConfigDict:
  """A next-scale (VAR) training config with every key and its default.

  model: VAR's `depth` d (width 64 d and d heads unless `dim` / `num_heads` are set), MLP ratio, class dropout,
  attention implementation. sample: VAR's defaults: guidance ramped linearly over the scales (`cfg_scale` 1 +
  VAR's cfg), top-k 900, top-p 0.96.
  """
  c = base_config(**data)
  c.task = "next_scale"
  c.tokenizer_workdir = tokenizer_workdir
  c.model = ml_collections.ConfigDict(dict(
      depth=16, dim=0, num_heads=0, mlp_ratio=4.0, num_classes=1000, class_dropout=0.1, attn_impl="auto",
      norm_eps=1e-6, dtype="float32", param_dtype="float32"))
  c.sample = ml_collections.ConfigDict(dict(
      temperature=1.0, top_k=900, top_p=0.96, cfg_scale=2.5, cfg_schedule="linear", cfg_interval=(0.0, 1.0)))
  c.optimizer.update(lr=8e-5 * 768 / 256, weight_decay=0.05, b1=0.9, b2=0.95)
  return c
