r"""LFQ tokenizer on the bundled MNIST digits (CPU-sized): 32x32 -> 8x8 tokens of 8 sign bits (256 codes).

  ar-gen train --config configs/mnist_lfq.py --workdir runs/mnist_lfq
  ar-gen eval-tokenizer --workdir runs/mnist_lfq
"""

from ar_gen.config import parse_arg
from tokenizers.config import tokenizer_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=500)
  c = tokenizer_config(train="bundled:mnist:train", eval="bundled:mnist:test", image_size=32, channels=1,
                       resize="pad", num_threads=2)
  c.total_steps = 5 if arg.runlocal else arg.steps
  c.batch_size = 32
  c.log_every_steps = 50
  c.ckpt_every_steps = 500
  c.vis_every_steps = 500
  c.optimizer.lr = 2e-3
  c.optimizer.warmup_steps = 50
  c.optimizer.end_lr_factor = 0.05
  c.model.update(quantizer="lfq", channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, z_channels=64,
                 attention=False, num_bits=8, beta=0.25, entropy_weight=0.05, diversity_gamma=1.0,
                 entropy_temperature=0.1)
  c.loss.update(rec="l2", ms_ssim_weight=0.0)
  return c
