"""`ar-gen bench sample`: next-token sampling speed, KV-cached against uncached, and every registered family's
sampler against the next-token one, on random weights.

For each batch size: tokens/s of the cached next-token sampler (the one driver, `ar_gen.decoding.driver.sample`:
the whole sequence in one jitted `fori_loop`, timed end to end), tokens/s of uncached decoding (each new token from
a full forward pass over the fixed-length sequence, the jitted step timed over as many steps as `--min-seconds`
allows: every step has the same shape and cost), and the median time of one cached step at two positions
(`--positions`, e.g. 16 and 240 of 256; at least three calls each after a discarded first): with a cache sized up
front the ratio should be close to 1. Then images/s of every family registered in `ar_gen/families` (its
`bench_steps`: the same depth, width and heads; a multi-map family uses the scales `--scales`, by default VAR's
schedule up to the grid's side, e.g. 1, 2, 3, 4, 5, 6, 8, 10, 13, 16 for 256 tokens) through the same driver,
against the next-token family's; token generation only, no image decoding. Guidance is off (it doubles the batch
in every mode).

Then sampling as users sample (`ar_gen.bench.limits`): every family with the sampling settings of its official code
(`Family.bench_sampling`: LlamaGen's top-k 2000 with guidance 2, VAR's top-k 900 / top-p 0.96 with its guidance
ramp), guidance off and on, as tokens/s, images/s and the fraction of this machine's limit (`ar_gen.bench.roofline`,
measured at the start of the same run). `--var-d16` adds VAR-d16 (310M) with its VQVAE's decode to 256 px images:
the work of VAR's `autoregressive_infer_cfg`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
from flax import nnx

from ar_gen import table
from ar_gen.bench import limits, roofline, timing
from ar_gen.decoding import driver
from ar_gen.decoding.logits import SamplingConfig, sample_logits
from ar_gen.families._registry import BenchSpec, registered
from ar_gen.layout import TokenLayout
from ar_gen.models.next_token import PRESETS, NextTokenModel
from ar_gen.nn.few_rows import few_rows_view
from tokenizers.multiscale import VAR_SCALES

SIZES = {"tiny": (2, 64, 2), **PRESETS}  # (depth, dim, heads); tiny is for smoke tests


def build_model(size: str, grid: tuple[int, int], vocab_size: int, num_classes: int) -> NextTokenModel:
  if size not in SIZES:
    raise ValueError(f"--size must be one of {sorted(SIZES)}, got {size!r}")
  depth, dim, heads = SIZES[size]
  return NextTokenModel(TokenLayout.raster(grid, vocab_size), num_classes, depth, dim, heads, rngs=nnx.Rngs(0))


def default_scales(side: int) -> tuple[int, ...]:
  """VAR's scale schedule below the grid's side, then the side."""
  return tuple(p for p in VAR_SCALES if p < side) + (side,)


def var_d16_workload(cfg: SamplingConfig) -> limits.Workload:
  """VAR-d16 over VAR's multi-scale VQVAE (configs/imagenet256_var_tok.py), random weights, decoding to images."""
  from ar_gen.config import CONFIG_DIR, load_config  # pylint: disable=g-import-not-at-top
  from ar_gen.families.next_scale import ResidualSteps  # pylint: disable=g-import-not-at-top
  from ar_gen.models.next_scale import NextScaleModel  # pylint: disable=g-import-not-at-top
  from tokenizers.model import build_tokenizer  # pylint: disable=g-import-not-at-top
  m = load_config(os.path.join(CONFIG_DIR, "imagenet256_var_tok.py")).model
  tokenizer = build_tokenizer(m, 3, 256, nnx.Rngs(0))
  model = NextScaleModel(tokenizer.quantizer.layout, m.multiscale.code_dim, 1000, 16, 1024, 16, rngs=nnx.Rngs(0))
  return limits.Workload("VAR-d16 + decode", ResidualSteps(model, tokenizer.quantizer), cfg, 1000, tokenizer,
                         lambda tok, tokens_BL: jnp.clip(tok.decode(tokens_BL), -1, 1))


def as_users_sample(families: dict, batch_sizes: tuple[int, ...], num_classes: int, roof: roofline.Roofline,
                    min_seconds: float, var_d16: bool) -> list[dict]:
  """Each family (and VAR-d16 + decode) with its official sampling settings, guidance off and on."""
  declared, workloads = registered(), []
  for name, steps in families.items():
    family = declared[name]
    cfg = family.bench_sampling or SamplingConfig()
    kw = dict(sampler=family.bench_sampler, with_limit=family.bench_limit, diffusion_steps=family.bench_diffusion_steps)
    workloads += [limits.Workload(name, steps, dataclasses.replace(cfg, cfg_scale=1.0), num_classes, **kw),
                  limits.Workload(name, steps, cfg, num_classes, **kw)]
  if var_d16:
    workloads.append(var_d16_workload(declared["next_scale"].bench_sampling))
  rows = []
  for work in workloads:
    for batch in batch_sizes:
      rows.append(limits.measure(work, batch, roof, min_seconds))
      print(f"  {work.name} batch {batch} guidance {rows[-1]['guidance'] or 'off'}: done", flush=True)
  return rows


def bench_family(steps: driver.Steps, batch: int, num_classes: int, min_seconds: float, sampler=None) -> float:
  """Seconds to sample the tokens of `batch` images through the driver (one jitted call; `sampler` as in
  `limits.Workload`)."""
  graphdef, state = nnx.split(steps)
  labels_B = jnp.arange(batch, dtype=jnp.int32) % num_classes
  rng, cfg = jax.random.PRNGKey(0), SamplingConfig()
  sampler = sampler or limits.categorical_sampler

  def generate(state, labels_B, rng):
    return sampler(nnx.merge(graphdef, state), labels_B, rng, cfg)

  fn = timing.compiled(generate, state, labels_B, rng)
  return timing.seconds_per_call(lambda: fn(state, labels_B, rng), min_seconds, min_calls=1)


def bench_batch(model: NextTokenModel, batch: int, positions: tuple[int, int], min_seconds: float) -> dict:
  """Cached and uncached tokens/s and the cached step time at two positions, for one batch size."""
  graphdef, state = nnx.split(model)
  n, cfg = model.num_tokens, SamplingConfig()
  labels_B = jnp.arange(batch, dtype=jnp.int32) % model.num_classes
  rng = jax.random.PRNGKey(0)

  cached_seconds = bench_family(model, batch, model.num_classes, min_seconds)

  def uncached_step(state, tokens_BN, labels_B, index):
    logits_BV = nnx.merge(graphdef, state)(tokens_BN, labels_B)[:, index]
    return tokens_BN.at[:, index].set(sample_logits(logits_BV, jax.random.fold_in(rng, index), cfg))

  tokens_BN = jnp.zeros((batch, n), jnp.int32)
  step = timing.compiled(uncached_step, state, tokens_BN, labels_B, jnp.int32(0))
  uncached_seconds = timing.seconds_per_call(lambda: step(state, tokens_BN, labels_B, jnp.int32(n // 2)),
                                             min_seconds=min_seconds, min_calls=1)

  def cached_step(state, inputs_B, index, cache):  # on the sampler's view of the model, as `driver.sample`
    m = few_rows_view(nnx.merge(graphdef, state))
    return m.step(m.feed(inputs_B[:, None], index, None), index, cache)

  cache = model.init_cache(batch)
  inputs_B = jnp.zeros((batch,), jnp.int32)
  one_step = timing.compiled(cached_step, state, inputs_B, jnp.int32(1), cache)
  step_seconds = [timing.seconds_per_call(lambda p=p: one_step(state, inputs_B, jnp.int32(p), cache),
                                          min_seconds=min_seconds, long_calls_once=False) for p in positions]
  return {"batch": batch, "cached_tokens_per_s": batch * n / cached_seconds,
          "uncached_tokens_per_s": batch / uncached_seconds,
          "speedup": uncached_seconds * n / cached_seconds,
          "step_ms_first": 1e3 * step_seconds[0], "step_ms_second": 1e3 * step_seconds[1],
          "step_ratio": step_seconds[1] / step_seconds[0]}


def run(size: str = "B", batch_sizes: tuple[int, ...] = (1, 8, 64), num_tokens: int = 256,
        vocab_size: int = 16384, num_classes: int = 1000, positions: tuple[int, int] = (16, 240),
        min_seconds: float = 2.0, out: str | None = None, scales: tuple[int, ...] | None = None,
        var_d16: bool = False, roofline_mib: int = 512) -> list[dict]:
  side = int(round(num_tokens ** 0.5))
  if side * side != num_tokens:
    raise ValueError(f"--tokens must be a square (a token grid), got {num_tokens}")
  if not all(0 < p < num_tokens for p in positions):
    raise ValueError(f"--positions must lie in 1..{num_tokens - 1}, got {positions}")
  scales = tuple(scales or default_scales(side))
  if scales[-1] != side:
    raise ValueError(f"--scales must end at the grid's side {side}, got {scales}")
  model = build_model(size, (side, side), vocab_size, num_classes)
  spec = BenchSpec(*SIZES[size], (side, side), vocab_size, num_classes, scales)
  families = {name: family.bench_steps(spec) for name, family in registered().items()}
  count = lambda m: sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
  params = count(model)
  family_params = {name: count(steps) for name, steps in families.items()}
  print(f"bench sample: model {size} ({params / 1e6:.1f}M parameters; "
        + ", ".join(f"{n} {p / 1e6:.1f}M" for n, p in family_params.items())
        + f"), {num_tokens} tokens, scales {','.join(map(str, scales))}, vocab {vocab_size}, "
        f"{jax.devices()[0].device_kind} x {jax.device_count()}", flush=True)
  roof = roofline.measure(min(min_seconds, 1.0), roofline_mib)
  print(roofline.describe(roof), flush=True)
  rows = []
  for batch in batch_sizes:
    row = bench_batch(model, batch, positions, min_seconds)
    row["next_token_images_per_s"] = row["cached_tokens_per_s"] / num_tokens  # the same sampler, timed above
    for name, steps in families.items():
      if name == "next_token":
        continue
      seconds = bench_family(steps, batch, num_classes, min_seconds, registered()[name].bench_sampler)
      row[f"{name}_images_per_s"] = batch / seconds
      row[f"{name}_vs_next_token"] = row[f"{name}_images_per_s"] / row["next_token_images_per_s"]
    rows.append(row)
    print(f"  batch {batch}: done", flush=True)
  p0, p1 = positions
  print(table.format_table(rows, [
      ("batch", "batch", "d"), ("cached_tokens_per_s", "cached tok/s", ".1f"),
      ("uncached_tokens_per_s", "uncached tok/s", ".2f"), ("speedup", "cached/uncached", ".1f"),
      ("step_ms_first", f"step@{p0} ms", ".2f"), ("step_ms_second", f"step@{p1} ms", ".2f"),
      ("step_ratio", f"step@{p1}/step@{p0}", ".3f")]))
  columns = [("batch", "batch", "d")]
  for name, steps in families.items():
    columns.append((f"{name}_images_per_s", f"{name} img/s ({len(driver.steps_schedule(steps).sizes)} steps)", ".3f"))
  columns += [(f"{name}_vs_next_token", f"{name}/next_token", ".1f") for name in families if name != "next_token"]
  print(table.format_table(rows, columns))
  usage = as_users_sample(families, batch_sizes, num_classes, roof, min_seconds, var_d16)
  print(table.format_table(usage, [
      ("workload", "as users sample", "s"), ("batch", "batch", "d"), ("guidance", "guidance", ".1f"),
      ("steps", "steps", "d"), ("diffusion_steps", "diffusion steps", "d"),
      ("tokens_per_s", "tok/s", ".1f"), ("images_per_s", "img/s", ".3f"), ("limit_seconds", "limit s", ".3g"),
      ("fraction_of_limit", "fraction of limit", ".2f"), ("memory_gib", "memory GiB", ".2f")]))
  if out:
    with open(out, "w") as f:
      json.dump({"size": size, "params": params, "family_params": family_params, "num_tokens": num_tokens,
                 "scales": list(scales), "vocab_size": vocab_size, "positions": list(positions),
                 "device": jax.devices()[0].device_kind, "roofline": dataclasses.asdict(roof), "rows": rows,
                 "as_users_sample": usage}, f, indent=2)
  return rows
