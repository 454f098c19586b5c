r"""A small CNN classifier of the bundled MNIST digits: scores class-conditional samples (sample_accuracy) and
gives the features of FID on MNIST.

  ar-gen train --config configs/mnist_classifier.py --workdir runs/mnist_classifier
"""

from ar_gen.config import parse_arg
from ar_gen.eval.classifier import classifier_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=250)
  c = classifier_config(train="bundled:mnist:train", eval="bundled:mnist:test", image_size=32, channels=1,
                        resize="pad", num_threads=2)
  c.total_steps = 5 if arg.runlocal else arg.steps
  c.batch_size = 64
  c.log_every_steps = 50
  c.ckpt_every_steps = 250
  c.vis_every_steps = 0
  c.optimizer.update(lr=2e-3, warmup_steps=20, end_lr_factor=0.05, weight_decay=1e-4)
  return c
