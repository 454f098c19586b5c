"""The coarse-to-fine family (`config.task = 'coarse_to_fine'`, CTF, arXiv 2503.16194): coarse labels by next-token
prediction, then every fine token in one bidirectional pass.

Three runs, each an ordinary ar-gen work directory:
  * the clustered tokenizer (`ar-gen cluster-codebook --workdir VQ --k K --out TOK`, `tokenizers/clustered.py`):
    the VQ and its codeword -> cluster table; as a tokenizer it gives K-way coarse labels;
  * stage 1, a plain `next_token` run whose `frozen.tokenizer` is TOK (K-way embedding and head, nothing new);
  * stage 2, this task: `frozen.tokenizer = TOK`, `frozen.stage1 = STAGE1` (may be empty to train without it),
    a `FineTokenModel` (`ar_gen/models/coarse_to_fine.py`) trained on ground-truth coarse labels (table[fine ids]
    of the VQ's tokens: images, or a `tokens:` set extracted by the VQ itself, which `cluster.source` names).
With `model.cluster_mask` (default on) the logits outside each position's cluster are masked in training and
sampling, so every fine token lies in its coarse cluster. Sampling (`ar-gen sample --workdir STAGE2`): stage 1
through the one driver with the `sample` section's guidance, temperature, top-k / top-p (the CLI flags act on
it), then one stage-2 pass with `sample.fine_temperature` and `sample.fine_top_k` (0 = all), decoded by the VQ.
Owns: this file, the model file, tokenizers/clustered.py, ar_gen/commands/cluster_codebook.py,
configs/mnist_ctf*.py and configs/imagenet256_ctf*.py.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from ar_gen.config import ConfigError, parse_arg
from ar_gen.decoding import driver
from ar_gen.decoding.heads import CategoricalHead
from ar_gen.decoding.logits import NEG_INF, SamplingConfig
from ar_gen.errors import UserError
from ar_gen.families import next_token
from ar_gen.families._discrete import FrozenTokenizerTask, frozen_stage1
from ar_gen.families._registry import BenchSpec, DemoPrelude, Family
from ar_gen.layout import TokenLayout
from ar_gen.models.coarse_to_fine import FineTokenModel, build_fine_model
from ar_gen.models.next_token import NextTokenModel

# CTF's sampling (Sec. 4): stage-1 guidance 2.0 and temperature 1.1; stage-2 temperature 1.1 and every token (top-k
# off). Its coarse vocabulary: K = 512 clusters of LlamaGen's 16384 codes.
CTF_SAMPLING = dict(cfg_scale=2.0, temperature=1.1, top_k=0, top_p=1.0, fine_temperature=1.1, fine_top_k=0)
CTF_CLUSTERS = 512
MNIST_CLUSTERS = 16


def mask_to_clusters(logits_BLV: jax.Array, table_V: jax.Array, coarse_BL: jax.Array) -> jax.Array:
  """The logits with every fine id outside its position's coarse cluster (table[v] != label) at NEG_INF."""
  return jnp.where(table_V[None, None, :] == coarse_BL[..., None], logits_BLV, NEG_INF)


def fine_tokens(model: FineTokenModel, coarse_BL: jax.Array, labels_B: jax.Array, table_V: jax.Array | None,
                rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """Stage 2: every fine token [B, L] in one pass (masked to its cluster when `table_V` is given)."""
  logits_BLV = model(coarse_BL, labels_B)
  if table_V is not None:
    logits_BLV = mask_to_clusters(logits_BLV, table_V, coarse_BL)
  return CategoricalHead(cfg)(logits_BLV, None, jnp.float32(1.0), rng)


def two_stage_tokens(stage1: NextTokenModel, stage2: FineTokenModel, table_V: jax.Array | None, cond: dict,
                     rng: jax.Array, cfg: SamplingConfig, fine_cfg: SamplingConfig) -> tuple[jax.Array, jax.Array]:
  """(coarse labels, fine tokens) [B, L]: stage 1 through the driver, then one stage-2 pass."""
  coarse_BL = driver.sample(stage1, CategoricalHead(cfg), cond, jax.random.fold_in(rng, 0), cfg)
  return coarse_BL, fine_tokens(stage2, coarse_BL, cond["label"], table_V, jax.random.fold_in(rng, 1), fine_cfg)


class CoarseToFineSteps(nnx.Module):
  """What the bench times: stage 1 (the driver's step contract, delegated), stage 2 and the table."""

  def __init__(self, stage1: NextTokenModel, stage2: FineTokenModel, table_V: jax.Array):
    self.stage1, self.stage2, self.table = stage1, stage2, nnx.Variable(table_V)
    self.layout = stage1.layout

  def null_condition(self, cond):
    return self.stage1.null_condition(cond)

  def begin(self, cond, spare_slots: int = 0):
    return self.stage1.begin(cond, spare_slots)

  def step(self, inputs, index, cache, context=None):
    return self.stage1.step(inputs, index, cache, context)

  def feed(self, tokens, index, carry, context=None):
    return self.stage1.feed(tokens, index, carry, context)


def bench_steps(spec: BenchSpec) -> CoarseToFineSteps:
  """Random-weight stages of the bench's size: stage 1 over K = 512 labels (CTF's ratio of clusters to codes, 1 /
  32, for another vocabulary), stage 2 of the same depth and width."""
  k = max(1, spec.vocab_size * CTF_CLUSTERS // 16384)
  coarse = TokenLayout.raster(spec.grid, k)
  fine = TokenLayout.raster(spec.grid, spec.vocab_size)
  stage1 = NextTokenModel(coarse, spec.num_classes, spec.depth, spec.dim, spec.num_heads, rngs=nnx.Rngs(0))
  stage2 = FineTokenModel(fine, k, spec.num_classes, spec.depth, spec.dim, spec.num_heads, rngs=nnx.Rngs(1))
  return CoarseToFineSteps(stage1, stage2, jnp.arange(spec.vocab_size, dtype=jnp.int32) % k)


def bench_sampler(steps: CoarseToFineSteps, labels_B: jax.Array, rng: jax.Array, cfg: SamplingConfig) -> jax.Array:
  fine_cfg = SamplingConfig(temperature=CTF_SAMPLING["fine_temperature"], top_k=CTF_SAMPLING["fine_top_k"])
  return two_stage_tokens(steps.stage1, steps.stage2, steps.table[...], {"label": labels_B}, rng, cfg, fine_cfg)[1]


def demo_prelude(workdir, train_args) -> DemoPrelude:
  """The demo's clustered tokenizer (K = 16 of the demo VQ's 256 codes) and stage-1 run, before stage 2 trains."""
  tok, stage1 = workdir("tokenizer_ctf"), workdir("coarse_to_fine_stage1")
  tokens = workdir("coarse_to_fine_stage1_tokens")
  jobs = (("tokenizer_ctf", ["cluster-codebook", "--workdir", workdir("tokenizer_vq"), "--k", str(MNIST_CLUSTERS),
                             "--out", tok], ("tokenizer_vq",)),
          ("extract_coarse_to_fine_stage1", ["extract-tokens", "--workdir", tok, "--data", "bundled:mnist:train",
                                             "--out", tokens], ("tokenizer_ctf",)),
          ("coarse_to_fine_stage1", train_args("mnist_ctf_stage1.py", stage1, [f"frozen.tokenizer={tok}",
                                                                              f"data.train=tokens:{tokens}"]),
           ("extract_coarse_to_fine_stage1",)))
  return DemoPrelude(jobs, results=("tokenizer_ctf", "coarse_to_fine_stage1", "coarse_to_fine_stage1_tokens"),
                     overrides={"frozen.tokenizer": tok, "frozen.stage1": stage1}, after=("coarse_to_fine_stage1",))


FAMILY = Family("coarse_to_fine", demo_config="mnist_ctf.py", demo_tokenizer="tokenizer_vq",
                demo_tokenizer_config="mnist_vq.py",
                description="coarse-to-fine (CTF): coarse labels one per step, fine tokens in one pass",
                bench_steps=bench_steps, bench_sampler=bench_sampler, bench_limit=False, order=3,
                bench_sampling=SamplingConfig(cfg_scale=2.0, temperature=1.1),
                sampler_steps=lambda config, layout: layout.num_tokens + 1, demo_prelude=demo_prelude,
                in_make_demo=False)


def default_config(tokenizer_workdir: str, stage1_workdir: str, **data) -> ml_collections.ConfigDict:
  """A stage-2 config with every key: next-token's, plus `frozen.stage1`, `model.cluster_mask` and the stage-2
  sampling keys `sample.fine_temperature`, `sample.fine_top_k` (the other `sample` keys are stage 1's)."""
  return _stage2(next_token.default_config(tokenizer_workdir, **data), stage1_workdir)


def _stage2(c: ml_collections.ConfigDict, stage1_workdir: str) -> ml_collections.ConfigDict:
  """A next-token config made stage 2's: the task, stage 1, the cluster mask, no class or token dropout (stage 2
  is not guided, and its inputs are the true labels), CTF's sampling."""
  c.task = "coarse_to_fine"
  c.frozen.stage1 = stage1_workdir
  c.model.update(cluster_mask=True, class_dropout=0.0, token_dropout=0.0)
  c.sample.update(CTF_SAMPLING)
  return c


def imagenet_ctf_stage1_config(arg=None) -> ml_collections.ConfigDict:
  """CTF's stage 1 at LlamaGen-`size` (B, L, XL: the paper's) on ImageNet 256 (configs/imagenet256_ctf_stage1.py):
  LlamaGen's recipe over the K = 512 labels of a clustered VQ-16, sampling with CTF's guidance and temperature."""
  arg = parse_arg(arg, size=None, runlocal=False, tokenizer="runs/imagenet256_ctf_k512")
  if arg.size not in ("B", "L", "XL"):
    raise ConfigError(f"imagenet256_ctf_stage1.py needs :size=S with S one of CTF's stage-1 sizes ['B', 'L', "
                      f"'XL'], got {'no size' if arg.size is None else f'size={arg.size!r}'}")
  c = next_token.imagenet_llamagen_config(_llamagen_arg(arg))
  c.sample.update({k: v for k, v in CTF_SAMPLING.items() if not k.startswith("fine_")})
  return c


def _llamagen_arg(arg: ml_collections.ConfigDict) -> str:
  return ",".join([f"tokenizer={arg.tokenizer}"] + ([f"size={arg.size}"] if arg.size is not None else [])
                  + (["runlocal"] if arg.runlocal else []))


def imagenet_ctf_config(arg=None) -> ml_collections.ConfigDict:
  """CTF's stage 2 (LlamaGen-L's sizes: 326.7M, the paper's 343M) on ImageNet 256 over K = 512 clusters of LlamaGen's VQ-16, with
  LlamaGen's recipe (configs/imagenet256_ctf.py)."""
  arg = parse_arg(arg, runlocal=False, size="L", tokenizer="runs/imagenet256_ctf_k512",
                  stage1="runs/imagenet256_ctf_stage1_L")
  return _stage2(next_token.imagenet_llamagen_config(_llamagen_arg(arg)), arg.stage1)


class Task(FrozenTokenizerTask):
  """Stage 2 of coarse-to-fine: fine tokens from ground-truth coarse labels; sampling runs stage 1 first."""

  def __init__(self, config: ml_collections.ConfigDict, frozen: dict[str, Any]):
    super().__init__(config, frozen)
    if self.tokenizer.config.task != "clustered_tokenizer":
      raise ConfigError(f"task coarse_to_fine needs frozen.tokenizer to be a clustered tokenizer (`ar-gen "
                        f"cluster-codebook --workdir VQ --k K --out DIR`); {self.tokenizer.source} holds a "
                        f"{self.tokenizer.config.task!r} run")
    self.num_clusters = self.layout.vocab_size  # the coarse labels'; the task generates the fine tokens:
    self.layout = self.tokenizer.module().fine_layout
    self.stage1 = frozen_stage1(config, frozen, self.tokenizer, "coarse labels")

  def token_set_identity(self) -> dict:
    """A `tokens:` set must hold the VQ's fine tokens: made by the tokenizer the clusters were made of."""
    return self.tokenizer.config.cluster.source.to_dict()

  def build(self, rngs: nnx.Rngs) -> FineTokenModel:
    return build_fine_model(self.config.model, self.layout, self.num_clusters, rngs)

  def table(self, frozen: Any) -> jax.Array | None:
    """The codeword -> cluster table when the logits are masked to clusters (`model.cluster_mask`), else None."""
    return self.tokenizer_module(frozen).table[...] if self.config.model.cluster_mask else None

  def prepare(self, batch: dict[str, jax.Array], frozen: Any) -> dict[str, jax.Array]:
    """Fine tokens from the VQ unless the batch has them."""
    if "tokens" in batch:
      self.layout.check(batch["tokens"])
      return batch
    return {**batch, "tokens": self.tokenizer_module(frozen).fine.encode(batch["image"])}

  def loss(self, model: FineTokenModel, batch: dict, rng: jax.Array, step: jax.Array, frozen: Any):
    del step
    fine_BL = batch["tokens"].astype(jnp.int32)
    coarse_BL = self.tokenizer_module(frozen).coarse(fine_BL)
    logits_BLV = model(coarse_BL, batch["label"].astype(jnp.int32), train=True, rng=rng)
    table = self.table(frozen)
    if table is not None:
      logits_BLV = mask_to_clusters(logits_BLV, table, coarse_BL)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits_BLV, fine_BL).mean()
    return loss, {"token_accuracy": jnp.mean(jnp.argmax(logits_BLV, -1) == fine_BL)}, None

  def fine_sampling_config(self) -> SamplingConfig:
    return SamplingConfig(temperature=self.config.sample.fine_temperature, top_k=self.config.sample.fine_top_k)

  def stage1_model(self, frozen: Any) -> NextTokenModel:
    if self.stage1 is None:
      raise UserError("sampling a coarse-to-fine stage-2 run needs its stage 1: frozen.stage1 is empty; pass "
                      "--config.frozen.stage1=DIR (a next_token run over the same clustered tokenizer)")
    return self.stage1.module(None if frozen is None else frozen["stage1"])

  def sample_tokens(self, model: FineTokenModel, cond: dict, rng: jax.Array, frozen: Any,
                    cfg: SamplingConfig) -> jax.Array:
    """Fine tokens [B, L]: stage 1's coarse labels with `cfg`, then one stage-2 pass (trace under jit)."""
    return two_stage_tokens(self.stage1_model(frozen), model, self.table(frozen), cond, rng, cfg,
                            self.fine_sampling_config())[1]

  def decode_images(self, tokens: jax.Array, frozen: Any) -> jax.Array:
    """Fine tokens are the VQ's: its decoder draws them."""
    return jnp.clip(self.tokenizer_module(frozen).fine.decode(tokens), -1, 1)

  def visualize(self, model: FineTokenModel, batch: dict, frozen: Any) -> jax.Array:
    """Rows: VQ reconstructions of the batch, stage 2's most likely tokens from their true coarse labels, and (with
    stage 1) samples of classes 0, 1, 2, ..."""
    composed = self.tokenizer_module(frozen)
    fine_BL = composed.fine.encode(batch["image"])
    coarse_BL = composed.coarse(fine_BL)
    greedy = fine_tokens(model, coarse_BL, batch["label"].astype(jnp.int32), self.table(frozen),
                         jax.random.PRNGKey(0), SamplingConfig(temperature=0.0))
    rows = [self.decode_images(fine_BL, frozen), self.decode_images(greedy, frozen)]
    if self.stage1 is not None:
      n = batch["label"].shape[0]
      cond = self.condition(jnp.arange(n, dtype=jnp.int32) % self.config.model.num_classes)
      rows.append(self.sample_images(model, cond, jax.random.PRNGKey(0), frozen, self.sampling_config())[0])
    return jnp.stack(rows).astype(batch["image"].dtype)
