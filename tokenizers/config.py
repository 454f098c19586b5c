"""Config defaults of tokenizer experiments: the `model` and `loss` sections (used by configs/*.py)."""

import ml_collections

from ar_gen.config import base_config
from tokenizers.model import QUANTIZERS


def tokenizer_config(quantizer: str = "vq", **data) -> ml_collections.ConfigDict:
  """A tokenizer training config with every key and its default; experiment files change what they need.

  model: `quantizer` (vq, lfq, multiscale, frequency, kl) and its own section `model.<quantizer>` only (its keys and defaults:
  `tokenizers/<quantizer>.py::default_config`), encoder/decoder widths, projection kernel. loss:
  `decoder_level_attention=False` leaves out the decoder's attention after its lowest-resolution residual blocks
(MAR's KL-16 has none; its middle block keeps one). loss: reconstruction (l1 | l2), MS-SSIM, LPIPS (weight 1.0 as LlamaGen's: training then needs the weights from `ar-gen
  convert-lpips` in lpips_path; lpips_weight=0 turns it off), PatchGAN (off when disc_weight=0; VQGAN's adaptive
  weight unless disc_adaptive_weight=False).
  """
  if quantizer not in QUANTIZERS:
    raise ValueError(f"quantizer must be one of {sorted(QUANTIZERS)}, got {quantizer!r}")
  c = base_config(**data)
  c.task = "tokenizer"
  c.model = ml_collections.ConfigDict(dict(
      quantizer=quantizer, channels=128, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2, z_channels=256,
      attention=True, decoder_level_attention=True, dtype="float32", param_dtype="float32", quant_conv_kernel=1))
  c.model[quantizer] = QUANTIZERS[quantizer].default_config()
  c.loss = ml_collections.ConfigDict(dict(
      rec="l2", rec_weight=1.0, ms_ssim_weight=0.0, lpips_path="", lpips_weight=1.0, disc_weight=0.0, disc_start=20000,
      disc_adaptive_weight=True, disc_channels=64, disc_layers=3))
  return c


def mnist_tokenizer_config(quantizer: str, steps: int, runlocal: bool) -> ml_collections.ConfigDict:
  """The CPU-sized MNIST setting shared by configs/mnist_vq.py, mnist_lfq.py and mnist_var_tok.py: 32x32 digits
  -> an 8x8 latent, no LPIPS."""
  c = tokenizer_config(quantizer, train="bundled:mnist:train", eval="bundled:mnist:test", image_size=32, channels=1,
                       resize="pad", num_threads=2)
  c.total_steps = 5 if runlocal else steps
  c.batch_size = 32
  c.log_every_steps = 50
  c.ckpt_every_steps = c.vis_every_steps = 500
  c.optimizer.update(lr=2e-3, warmup_steps=50, end_lr_factor=0.05)
  c.model.update(channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, z_channels=64, attention=False)
  c.loss.update(rec="l2", ms_ssim_weight=0.0, lpips_weight=0.0)
  return c


def imagenet_tokenizer_config(quantizer: str, total_steps: int, batch_size: int,
                              ema_decay: float) -> ml_collections.ConfigDict:
  """The ImageNet 256 setting shared by configs/imagenet256_*.py tokenizers: random crops and flips, logs every
  100 steps, checkpoints and reconstruction grids every 5000."""
  c = tokenizer_config(quantizer, train="tfds:imagenet2012:train", eval="tfds:imagenet2012:validation", image_size=256,
                       channels=3, resize="crop", random_flip=True)
  c.update(total_steps=total_steps, batch_size=batch_size, ema_decay=ema_decay, log_every_steps=100,
           ckpt_every_steps=5000, vis_every_steps=5000)
  return c


def shrink_for_runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `:runlocal` variant of a large config: same structure, one step of a narrow model on 64x64 images; LPIPS
  off unless the config names its weights (a smoke run has no VGG weights to read)."""
  c.total_steps = 1
  c.batch_size = 2
  c.log_every_steps = c.ckpt_every_steps = c.vis_every_steps = 1
  c.vis_examples = 2
  c.data.update(image_size=64, num_threads=1)
  c.model.update(channels=16, num_res_blocks=1)
  c.loss.update(disc_channels=8, disc_start=0)
  if not c.loss.lpips_path:
    c.loss.lpips_weight = 0.0
  return c
