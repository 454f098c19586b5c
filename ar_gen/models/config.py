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
  c.frozen = ml_collections.ConfigDict(dict(tokenizer=tokenizer_workdir))
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
  c.frozen = ml_collections.ConfigDict(dict(tokenizer=tokenizer_workdir))
  c.model = ml_collections.ConfigDict(dict(
      depth=16, dim=0, num_heads=0, mlp_ratio=4.0, num_classes=1000, class_dropout=0.1, attn_impl="auto",
      norm_eps=1e-6, dtype="float32", param_dtype="float32"))
  c.sample = ml_collections.ConfigDict(dict(
      temperature=1.0, top_k=900, top_p=0.96, cfg_scale=2.5, cfg_schedule="linear", cfg_interval=(0.0, 1.0)))
  c.optimizer.update(lr=8e-5 * 768 / 256, weight_decay=0.05, b1=0.9, b2=0.95)
  return c


def mnist_ar_config(c: ml_collections.ConfigDict, steps: int, runlocal: bool) -> ml_collections.ConfigDict:
  """The CPU-sized MNIST training setting shared by configs/mnist_next_token.py and mnist_var.py."""
  c.data.update(train="bundled:mnist:train", eval="bundled:mnist:test", image_size=32, channels=1, resize="pad",
                num_threads=2)
  c.update(total_steps=5 if runlocal else steps, batch_size=32, log_every_steps=50, ckpt_every_steps=500,
           vis_every_steps=500, vis_examples=10)
  c.optimizer.update(lr=2e-3, warmup_steps=100, end_lr_factor=0.05, weight_decay=0.05)
  return c


# VAR's recipe per depth: ImageNet epochs at batch 768 (1,281,167 // 768 = 1668 steps per epoch, `num_steps`).
VAR_EPOCHS = {16: 200, 20: 250, 24: 350, 30: 350}
IMAGENET_TRAIN_EXAMPLES = 1_281_167  # tfds imagenet2012 train


def imagenet_var_config(arg=None) -> ml_collections.ConfigDict:
  """VAR-d`depth` on ImageNet 256 (configs/imagenet256_var.py:depth=N, N in VAR_EPOCHS): batch 768, AdamW (0.9,
  0.95), lr 8e-5 per 256 images, weight decay 0.05, grad clip 2, warmup 2% of training, bf16 compute, FSDP over all
  devices for d24+."""
  from ar_gen.config import ConfigError, num_steps, parse_arg  # pylint: disable=g-import-not-at-top
  arg = parse_arg(arg, depth=None, runlocal=False, tokenizer="runs/imagenet256_var_tok")
  depth = arg.depth
  if not (isinstance(depth, int) and not isinstance(depth, bool) and depth in VAR_EPOCHS):
    raise ConfigError(f"imagenet256_var.py needs :depth=N with N one of VAR's depths {sorted(VAR_EPOCHS)}, "
                      f"got {'no depth' if depth is None else f'depth={depth!r}'}")
  c = next_scale_config(arg.tokenizer, train="tfds:imagenet2012:train", eval="tfds:imagenet2012:validation",
                        image_size=256, channels=3, resize="crop", random_flip=True)
  c.batch_size = 768
  c.total_steps = num_steps(epochs=VAR_EPOCHS[depth], batch_size=c.batch_size, dataset_size=IMAGENET_TRAIN_EXAMPLES)
  c.log_every_steps = 100
  c.ckpt_every_steps = c.vis_every_steps = 5000
  c.optimizer.update(lr=8e-5 * c.batch_size / 256, warmup_steps=c.total_steps // 50, end_lr_factor=0.0,
                     weight_decay=0.05, b1=0.9, b2=0.95, grad_clip=2.0)
  c.model.update(depth=depth, num_classes=1000, class_dropout=0.1, dtype="bfloat16")
  if depth >= 24:
    c.mesh.update(data=1, fsdp=-1)
  if arg.runlocal:
    c.update(total_steps=1, batch_size=2, log_every_steps=1, ckpt_every_steps=1, vis_every_steps=1, vis_examples=2)
    c.data.update(image_size=64, num_threads=1)
    c.mesh.update(data=-1, fsdp=1)
    c.model.update(depth=2, dim=64, num_heads=2, dtype="float32")
  return c
