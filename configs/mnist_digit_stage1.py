r"""Discriminative tokens, stage 1 on MNIST: the next-token model of configs/mnist_next_token.py over the 64 k-means
ids of the SSL encoder's features (DiGIT on small data), with label smoothing 0.1, 3000 steps (about 10 minutes on 2
CPU cores), sampled with guidance 2.0 at temperature 0.7 (DiGIT's stage 1 is unguided; docs/digit.md says why
this one is not).

  ar-gen train --config configs/mnist_ssl_encoder.py --workdir runs/mnist_ssl
  ar-gen fit-kmeans --encoder runs/mnist_ssl --data bundled:mnist:train --k 64 --out runs/mnist_digit_tok
  ar-gen extract-tokens --workdir runs/mnist_digit_tok --data bundled:mnist:train --out runs/mnist_digit_ids
  ar-gen train --config configs/mnist_digit_stage1.py:tokenizer=runs/mnist_digit_tok --workdir runs/mnist_digit_s1 \
      --config.data.train=tokens:runs/mnist_digit_ids

Then stage 2 (configs/mnist_digit.py). Stage 1's own pictures show the ids as grey label maps.
"""

from ar_gen.families.discriminative import mnist_stage1_config


def get_config(arg=None):
  return mnist_stage1_config(arg)
