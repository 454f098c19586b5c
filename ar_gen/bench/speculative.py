"""`ar-gen bench speculative`: speculative decoding of trained runs against their plain sampler, as speed-up ratios.

For each batch size and window `gamma`: the seconds of one jitted call of the target's plain sampler (token
generation and the tokenizer's decode, the run's `sample` settings) and of the speculative one (a draft model from
`--draft-workdir`, or draft-free with `--jacobi`), each compiled first and timed over calls of one fixed seed
(`ar_gen.bench.timing`), their ratio, and the statistics of the timed call: acceptance, tokens committed per
target call, target and draft calls. The labels cycle through the classes. Ratios, not times, are what to
compare across machines; `docs/benchmarks.md` records runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ar_gen import fileio, table
from ar_gen.bench import timing
from ar_gen.decoding import speculative_sampling
from ar_gen.errors import UserError
from ar_gen.runs.run import restore_run


def run(workdir: str, draft_workdir: str | None, jacobi: bool, gammas: tuple[int, ...], batch_sizes: tuple[int, ...],
        prefill: float = 0.0, min_seconds: float = 2.0, out: str | None = None) -> list[dict]:
  """Times plain against speculative sampling; prints and returns one row per (batch, gamma)."""
  if (draft_workdir is None) == (not jacobi):
    raise UserError("bench speculative needs exactly one of --draft-workdir DIR and --jacobi")
  target, state, _ = restore_run(workdir)
  draft = restore_run(draft_workdir) if draft_workdir else None
  task = target.task
  cfg = task.sampling_config()
  graphdef, model_state = nnx.split(target.model(state))
  draft_graphdef, draft_state = nnx.split(draft[0].model(draft[1])) if draft else (None, None)
  draft_task = draft[0].task if draft else None
  frozen = target.frozen_state
  num_classes = target.config.model.num_classes

  def plain_images(model_state, frozen, cond, key):
    return task.sample_images(nnx.merge(graphdef, model_state), cond, key, frozen, cfg)[0]

  def speculative_images(model_state, draft_state, frozen, cond, key, how):
    draft_model = nnx.merge(draft_graphdef, draft_state) if draft_graphdef is not None else None
    return task.speculative_images(nnx.merge(graphdef, model_state), draft_model, draft_task, cond, key, frozen, cfg,
                                   how)

  rows = []
  for b in batch_sizes:
    cond = task.condition(jnp.arange(b, dtype=jnp.int32) % num_classes)
    key = jax.random.PRNGKey(0)
    plain = timing.compiled(plain_images, model_state, frozen, cond, key)
    plain_s = timing.seconds_per_call(lambda: plain(model_state, frozen, cond, key), min_seconds)
    for gamma in gammas:
      how = speculative_sampling.Speculation(gamma=gamma, prefill=prefill, jacobi=jacobi)
      task.check_speculation(how, draft_task)
      spec = timing.compiled(lambda m, d, f, c, k, how=how: speculative_images(m, d, f, c, k, how), model_state,
                             draft_state, frozen, cond, key)
      call = lambda: spec(model_state, draft_state, frozen, cond, key)
      spec_s = timing.seconds_per_call(call, min_seconds)
      summary = speculative_sampling.summarize(jax.device_get(call()[1]), 1, task.layout.num_tokens)
      rows.append({"batch": b, "gamma": gamma, "method": "jacobi" if jacobi else "draft", "plain_s": plain_s,
                   "speculative_s": spec_s, "speedup": plain_s / spec_s, **summary})
  print(table.format_table(rows, [
      ("batch", "batch", "d"), ("method", "method", "s"), ("gamma", "gamma", "d"), ("plain_s", "plain s", ".3f"),
      ("speculative_s", "speculative s", ".3f"), ("speedup", "speed-up", ".2f"), ("acceptance", "acceptance", ".3f"),
      ("tokens_per_round", "tokens/target call", ".2f"), ("target_calls", "target calls", "d"),
      ("draft_calls", "draft calls", "d")]))
  if out:
    fileio.write_json(out, {"workdir": fileio.absolute(workdir), "draft_workdir": draft_workdir, "prefill": prefill,
                            "device": str(jax.devices()[0].device_kind), "rows": rows})
  return rows
