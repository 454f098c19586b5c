"""Class-conditional next-scale (VAR) model on the MNIST multi-scale tokens (scales 1..8, 130 tokens), CPU-sized.

  ar-gen train --config configs/mnist_var_tok.py --workdir runs/mnist_var_tok
  ar-gen train --config configs/mnist_var.py:tokenizer=runs/mnist_var_tok --workdir runs/mnist_var
  ar-gen sample --workdir runs/mnist_var --num-images 100 --classes all --out runs/mnist_var/samples

Six AR steps per image (one per scale) instead of 64 for the next-token model on the same latent grid.
"""

from ar_gen.config import parse_arg
from ar_gen.models.config import next_scale_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=1000, tokenizer="runs/demo/tokenizer_var")
  c = next_scale_config(arg.tokenizer, train="bundled:mnist:train", eval="bundled:mnist:test", image_size=32,
                        channels=1, resize="pad", num_threads=2)
  c.total_steps = 5 if arg.runlocal else arg.steps
  c.batch_size = 32
  c.log_every_steps = 50
  c.ckpt_every_steps = c.vis_every_steps = 500
  c.vis_examples = 10
  c.optimizer.update(lr=2e-3, warmup_steps=100, end_lr_factor=0.05, weight_decay=0.05)
  c.model.update(depth=4, dim=96, num_heads=3, num_classes=10, class_dropout=0.1)
  c.sample.update(cfg_scale=3.0, top_k=0, top_p=1.0, temperature=0.7)
  return c
