"""Class-conditional next-token model on the MNIST VQ tokens (8x8 grid, 256 codes), CPU-sized.

  ar-gen train --config configs/mnist_vq.py --workdir runs/mnist_vq
  ar-gen train --config configs/mnist_next_token.py:tokenizer=runs/mnist_vq --workdir runs/mnist_next_token
  ar-gen sample --workdir runs/mnist_next_token --num-images 100 --classes all --out runs/mnist_next_token/samples

Tokens are computed on the fly by the frozen tokenizer; to encode the training split once instead (what the demo
does), run `ar-gen extract-tokens --workdir runs/mnist_vq --data bundled:mnist:train --out runs/mnist_tokens` and
add `--config.data.train=tokens:runs/mnist_tokens`. 1000 steps of batch 32 take about 4 minutes on 2 CPU cores.
"""

from ar_gen.config import parse_arg
from ar_gen.models.config import next_token_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=1000, tokenizer="runs/demo/tokenizer_vq")
  c = next_token_config(arg.tokenizer, train="bundled:mnist:train", eval="bundled:mnist:test", image_size=32,
                        channels=1, resize="pad", num_threads=2)
  c.total_steps = 5 if arg.runlocal else arg.steps
  c.batch_size = 32
  c.log_every_steps = 50
  c.ckpt_every_steps = c.vis_every_steps = 500
  c.vis_examples = 10
  c.optimizer.update(lr=2e-3, warmup_steps=100, end_lr_factor=0.05, weight_decay=0.05)
  c.model.update(size="custom", depth=4, dim=96, num_heads=3, mlp_multiple_of=32, num_classes=10,
                 class_dropout=0.1, token_dropout=0.0)
  c.sample.update(cfg_scale=2.0, temperature=0.7)
  return c
