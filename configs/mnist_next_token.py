"""Class-conditional next-token model on the MNIST VQ tokens (8x8 grid, 256 codes), CPU-sized.

  ar-gen train --config configs/mnist_vq.py --workdir runs/mnist_vq
  ar-gen train --config configs/mnist_next_token.py:tokenizer=runs/mnist_vq --workdir runs/mnist_next_token
  ar-gen sample --workdir runs/mnist_next_token --num-images 100 --classes all --out runs/mnist_next_token/samples

Tokens are computed on the fly by the frozen tokenizer; to encode the training split once instead (what the demo
does), run `ar-gen extract-tokens --workdir runs/mnist_vq --data bundled:mnist:train --out runs/mnist_tokens` and
add `--config.data.train=tokens:runs/mnist_tokens`. 1000 steps of batch 32 take about 4 minutes on 2 CPU cores.
"""

from ar_gen.config import parse_arg
from ar_gen.eval.evaluators import sample_quality_section
from ar_gen.models.config import mnist_ar_config, next_token_config


def get_config(arg=None):
  arg = parse_arg(arg, runlocal=False, steps=1000, tokenizer="runs/demo/tokenizer_vq")
  c = mnist_ar_config(next_token_config(arg.tokenizer), arg.steps, arg.runlocal)
  c.model.update(size="custom", depth=4, dim=96, num_heads=3, mlp_multiple_of=32, num_classes=10,
                 class_dropout=0.1, token_dropout=0.0)
  c.sample.update(cfg_scale=2.0, temperature=0.7)
  # Sample quality (FID / precision / recall / accuracy in the MNIST classifier's feature space) every N steps:
  # --config.evals.sample_quality.every_steps=N (the demo sets N = total_steps and the classifier's directory).
  c.evals = {"sample_quality": sample_quality_section(ref="bundled:mnist:test",
                                                       features="classifier:runs/demo/classifier")}
  return c
