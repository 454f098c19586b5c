"""The next-frequency family (`config.task = 'next_frequency'`, NFIG, arXiv 2503.07076): VAR's next-scale model and
sampler over a frequency-band residual quantizer's maps (`tokenizers/frequency.py`), one band per AR step.

NFIG is VAR with band-limited quantizer targets, so this family is the next-scale family with a check: its
model (`ar_gen/models/next_scale.py`), teacher inputs and sampler steps (`ResidualSteps`) are next-scale's,
unchanged; what differs is the frozen tokenizer (`model.quantizer='frequency'`) and the recipe.
Owns: this file, `configs/mnist_nfig.py`, `configs/mnist_nfig_tok.py`, `configs/imagenet256_nfig.py`,
`configs/imagenet256_nfig_tok.py`. docs/families.md#next-frequency says what follows the paper and what not.
"""

from __future__ import annotations

import functools

import ml_collections

from ar_gen.config import parse_arg
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.families import next_scale
from ar_gen.families._registry import Family
from tokenizers.frequency import FrequencyBandQuantizer

# NFIG-310M: VAR-d16's sizes. The paper gives lr 8e-5, batch 768, 350 epochs (read as VAR's --tblr, per 256 images,
# as VAR's own 350-epoch runs use it); its lr decay and AdaLN gate init are not given: VAR-d16's.
NFIG_RECIPE = dict(batch_size=768, base_lr=8e-5, epochs=350, end_lr_factor=0.1, adaln_gate_init=1e-3)
NFIG_DEPTH = 16
# NFIG samples with CFG 4.5 and top-k 990; the paper does not say whether 4.5 is VAR's `cfg` argument (then
# ar-gen's ramp ends at 5.5) or the guidance of the last band; ar-gen reads it as the latter (docs/families.md).
NFIG_SAMPLING = dict(cfg_scale=4.5, cfg_schedule="linear", top_k=990, top_p=1.0, temperature=1.0)


def default_config(tokenizer_workdir: str, **data) -> ml_collections.ConfigDict:
  """next_scale.default_config with the task, over a frequency-band tokenizer (every key as next-scale's)."""
  c = next_scale.default_config(tokenizer_workdir, **data)
  c.task = "next_frequency"
  return c


def imagenet_nfig_config(arg=None) -> ml_collections.ConfigDict:
  """NFIG-310M on ImageNet 256 (configs/imagenet256_nfig.py): VAR-d16's model and VAR's recipe with NFIG's
  numbers (`NFIG_RECIPE`) and sampling (`NFIG_SAMPLING`), over a tokenizer of configs/imagenet256_nfig_tok.py."""
  arg = parse_arg(arg, runlocal=False, tokenizer="runs/imagenet256_nfig_tok")
  c = next_scale.recipe_config(NFIG_DEPTH, NFIG_RECIPE, arg.tokenizer, arg.runlocal)
  c.task = "next_frequency"
  c.sample.update(NFIG_SAMPLING)
  return c


FAMILY = Family("next_frequency", demo_config="mnist_nfig.py", demo_tokenizer="tokenizer_nfig",
                demo_tokenizer_config="mnist_nfig_tok.py",
                description="next-frequency (NFIG): one frequency band per step",
                bench_steps=functools.partial(next_scale.bench_steps, quantizer_class=FrequencyBandQuantizer),
                order=2, bench_sampling=SamplingConfig(**NFIG_SAMPLING),
                in_make_demo=False)  # with it `make demo` took 20 min on 2 cores: `--stages classifier,next_frequency`


class Task(next_scale.Task):
  """Class-conditional next-band prediction: next-scale's task over a frozen frequency-band tokenizer."""

  def __init__(self, config, frozen):
    super().__init__(config, frozen)
    quantizer = self.quantizer(None)
    if not isinstance(quantizer, FrequencyBandQuantizer):
      raise ValueError(f"task next_frequency needs a frequency-band tokenizer (model.quantizer='frequency'); "
                       f"{self.tokenizer.source} has a {type(quantizer).__name__}: use task next_scale for it")
