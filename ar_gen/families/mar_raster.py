"""The causal member of the continuous family as a registered family of its own (`config.task = 'mar_raster'` is
the same task as 'mar' with `model.order = 'raster'`), so the demo and `ar-gen bench sample` run it beside MAR.

Owns only this file and `configs/mnist_mar_raster.py`; the model is `ar_gen/models/causal_continuous.py`, the task
`ar_gen/families/mar.py`.
"""

from __future__ import annotations

from flax import nnx

from ar_gen.decoding.logits import SamplingConfig
from ar_gen.families import mar
from ar_gen.families._registry import BenchSpec, Family
from ar_gen.models.causal_continuous import CausalContinuousModel

class Task(mar.Task):
  """The continuous task (a 'mar_raster' config is a raster-order one)."""


def bench_steps(spec: BenchSpec) -> CausalContinuousModel:
  """A random-weight causal model of the bench's size over the grid (16-float tokens, MAR's head for the size)."""
  return CausalContinuousModel(mar.bench_layout(spec), spec.num_classes, spec.depth, spec.dim, spec.num_heads,
                               rngs=nnx.Rngs(0), **mar.bench_head_size(spec))


FAMILY = Family("mar_raster", demo_config="mnist_mar_raster.py", demo_tokenizer="tokenizer_kl",
                demo_tokenizer_config="mnist_kl.py",
                description=f"continuous, causal: raster order, KV cache, {mar.BENCH_DIFFUSION_STEPS}-step "
                "diffusion head",
                bench_steps=bench_steps, order=51, bench_sampler=mar.bench_sampler, bench_limit=False,
                in_make_demo=False, bench_diffusion_steps=mar.BENCH_DIFFUSION_STEPS, demo_group="continuous",
                sampler_steps=mar.sampler_steps,
                bench_sampling=SamplingConfig(cfg_scale=2.9))
