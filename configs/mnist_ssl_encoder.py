r"""A self-supervised feature encoder of the bundled MNIST digits (DiGIT's tokens on small data, CPU-sized): a ViT
with registers of DINOv2's form (patch 4 -> 8 x 8 patches, width 64, 4 blocks, 4 registers), trained with SimCLR
on augmented views; labels are never read, and it is not the classifier that judges samples.

  ar-gen train --config configs/mnist_ssl_encoder.py --workdir runs/mnist_ssl
  ar-gen fit-kmeans --encoder runs/mnist_ssl --data bundled:mnist:train --k 64 --out runs/mnist_digit_tok

Its features for the k-means are those of block `encoder.layer` (-2: the second from last), after the final norm.
"""

from ar_gen.config import parse_arg
from tokenizers.ssl import feature_encoder_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=600)
  c = feature_encoder_config(train="bundled:mnist:train", eval="bundled:mnist:test", image_size=32, channels=1,
                             resize="pad", num_threads=2)
  c.encoder.update(arch="custom", patch_size=4, dim=64, depth=4, num_heads=4, num_registers=4, input_size=32,
                   layer=-2, mean=(0.5,), std=(0.5,), layer_scale=0.1)
  c.ssl.update(objective="simclr", temperature=0.2, proj_dim=64, shift=3, jitter=0.3, noise=0.1)
  c.update(total_steps=5 if arg.runlocal else arg.steps, batch_size=128, log_every_steps=50, ckpt_every_steps=600,
           vis_every_steps=600, vis_examples=10)
  c.optimizer.update(lr=2e-3, warmup_steps=50, end_lr_factor=0.05, weight_decay=0.05)
  return c
