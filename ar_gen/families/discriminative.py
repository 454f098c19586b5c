"""The discriminative-token family (`config.task = 'discriminative'`, DiGIT, arXiv 2410.12490): a GPT over k-means
ids of a frozen self-supervised encoder's features, then a pixel decoder that generates a frozen VQ's tokens from
those ids.

Runs, each an ordinary ar-gen work directory:
  * the feature encoder (`feature_encoder`: `ar-gen convert-dinov2` of DINOv2-B/14-reg4, or an SSL encoder that
    ar-gen trains, configs/mnist_ssl_encoder.py) and the discriminative tokenizer made from it by `ar-gen
    fit-kmeans` (`tokenizers/discriminative.py`: images -> K-way ids, encode only);
  * stage 1, a plain `next_token` run whose `frozen.tokenizer` is the discriminative tokenizer (DiGIT: class token
    first, label smoothing 0.1: `model.label_smoothing`; top-k 200, no guidance);
  * stage 2, this task: `frozen.tokenizer` = the VQ whose tokens it generates, `frozen.ids` = the discriminative
    tokenizer, `frozen.stage1` = stage 1 (may be empty to train without it). A `PixelDecoder`
    (`ar_gen/models/pixel_decoder.py`, `model.variant`: 'ar' through the causal kernels and the one driver, or
    'maskgit', parallel with the cosine schedule of `ar_gen/decoding/maskgit.py`) trained on the ground-truth ids
    of the training images (the data must be images: each batch is encoded by both tokenizers), loss on the VQ
    part only. As DiGIT's released stage 2 it ignores the class.
Sampling (`ar-gen sample --workdir STAGE2`): stage 1 through the driver with the `sample` section (the CLI flags act
on it), then the pixel decoder with `sample.pixel_temperature`, `pixel_top_k`, `pixel_top_p` (DiGIT's AR variant:
top-p 0.8), `maskgit_steps` (8) and `choice_temperature`, and the VQ decodes. `reconstruct` (ids of real images ->
pixels) is what the `reconstruction` evaluator scores (PSNR). Owns: this file, the model file,
ar_gen/decoding/maskgit.py, tokenizers/{dinov2, ssl, discriminative}.py, ar_gen/commands/fit_kmeans.py,
ar_gen/convert/dinov2.py, configs/mnist_ssl_encoder.py, configs/*_digit*.py.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ar_gen.config import ConfigError, parse_arg
from ar_gen.decoding import driver, maskgit
from ar_gen.decoding.heads import CategoricalHead
from ar_gen.decoding.logits import SamplingConfig
from ar_gen.errors import UserError
from ar_gen.families import next_token
from ar_gen.families._discrete import FrozenTokenizerTask, frozen_stage1, mnist_config, token_cross_entropy
from ar_gen.families._registry import BenchSpec, DemoPrelude, Family
from ar_gen.layout import TokenLayout
from ar_gen.models.next_token import NextTokenModel
from ar_gen.models.pixel_decoder import PixelDecoder, build_pixel_decoder

# DiGIT's sampling: stage 1 top-k 200 without guidance; the pixel decoder top-p 0.8 (AR) or 8 MaskGIT steps.
DIGIT_STAGE1 = dict(cfg_scale=1.0, temperature=1.0, top_k=200, top_p=1.0)
# MNIST's stage 1 is guided, unlike DiGIT's: at this size and data (4500 digits) the unguided ids give digits of the
# wrong class (docs/digit.md has the numbers); 2.0 and 0.7 are the next-token MNIST config's settings.
MNIST_STAGE1 = dict(cfg_scale=2.0, temperature=0.7, top_k=0)
DIGIT_PIXELS = dict(pixel_temperature=1.0, pixel_top_k=0, pixel_top_p=0.8, maskgit_steps=8, choice_temperature=4.5)
DIGIT_CLUSTERS = 8192
MNIST_CLUSTERS = 64


def pixel_loss(logits_BSV: jax.Array, tokens_BN: jax.Array, weights_BN: jax.Array, num_ids: int,
               label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """(loss, accuracy) of the VQ part of sequence logits [B, M + N, V]: the weighted mean cross-entropy of its N
  positions (the prefix's M logits are never read, so they get no gradient)."""
  logits_BNV = logits_BSV[:, num_ids:]
  weights_BN = weights_BN.astype(jnp.float32)
  total = jnp.maximum(weights_BN.sum(), 1.0)
  loss = (token_cross_entropy(logits_BNV, tokens_BN, label_smoothing) * weights_BN).sum() / total
  accuracy = ((jnp.argmax(logits_BNV, -1) == tokens_BN) * weights_BN).sum() / total
  return loss, accuracy


def pixel_tokens(model: PixelDecoder, ids_BM: jax.Array, rng: jax.Array, cfg: SamplingConfig, steps: int = 8,
                 choice_temperature: float = 4.5) -> jax.Array:
  """VQ tokens [B, N] from ids [B, M]: through the driver (ar) or by MaskGIT decoding (trace under jit)."""
  if model.variant == "ar":
    return driver.sample(model, CategoricalHead(cfg), {"ids": ids_BM}, rng, cfg)
  return maskgit.sample(lambda tokens_BN: model(ids_BM, tokens_BN), ids_BM.shape[0], model.num_tokens,
                        model.mask_id, steps, rng, cfg, choice_temperature)


class DiscriminativeSteps(nnx.Module):
  """What the bench times: stage 1 (the driver's step contract, delegated) and the pixel decoder."""

  def __init__(self, stage1: NextTokenModel, stage2: PixelDecoder):
    self.stage1, self.stage2, self.layout = stage1, stage2, stage1.layout

  def null_condition(self, cond):
    return self.stage1.null_condition(cond)

  def begin(self, cond, spare_slots: int = 0):
    return self.stage1.begin(cond, spare_slots)

  def step(self, inputs, index, cache, context=None):
    return self.stage1.step(inputs, index, cache, context)

  def feed(self, tokens, index, carry, context=None):
    return self.stage1.feed(tokens, index, carry, context)


def bench_steps(spec: BenchSpec, variant: str = "ar") -> DiscriminativeSteps:
  """Random-weight stages of the bench's size: stage 1 over K = V / 2 ids (DiGIT's 8192 for a 16384-code VQ), the
  pixel decoder of the same depth and width over the same grid."""
  k = max(1, spec.vocab_size * DIGIT_CLUSTERS // 16384)
  ids, vq = TokenLayout.raster(spec.grid, k), TokenLayout.raster(spec.grid, spec.vocab_size)
  stage1 = NextTokenModel(ids, spec.num_classes, spec.depth, spec.dim, spec.num_heads, rngs=nnx.Rngs(0))
  return DiscriminativeSteps(stage1, PixelDecoder(vq, ids, variant, spec.depth, spec.dim, spec.num_heads,
                                                  rngs=nnx.Rngs(1)))


def bench_sampler(steps: DiscriminativeSteps, labels_B: jax.Array, rng: jax.Array, cfg: SamplingConfig):
  ids_BM = driver.sample(steps.stage1, CategoricalHead(cfg), {"label": labels_B}, jax.random.fold_in(rng, 0), cfg)
  pixel_cfg = SamplingConfig(top_p=DIGIT_PIXELS["pixel_top_p"])
  return pixel_tokens(steps.stage2, ids_BM, jax.random.fold_in(rng, 1), pixel_cfg)


def demo_prelude(workdir, train_args) -> DemoPrelude:
  """The demo's SSL encoder, its discriminative tokenizer (K = 64) and the stage-1 run, before stage 2 trains."""
  encoder, tok = workdir("digit_encoder"), workdir("tokenizer_digit")
  stage1, tokens = workdir("discriminative_stage1"), workdir("discriminative_stage1_tokens")
  jobs = (("digit_encoder", train_args("mnist_ssl_encoder.py", encoder, []), ()),
          ("tokenizer_digit", ["fit-kmeans", "--encoder", encoder, "--data", "bundled:mnist:train", "--k",
                               str(MNIST_CLUSTERS), "--out", tok], ("digit_encoder",)),
          ("extract_discriminative_stage1", ["extract-tokens", "--workdir", tok, "--data", "bundled:mnist:train",
                                             "--out", tokens], ("tokenizer_digit",)),
          ("discriminative_stage1", train_args("mnist_digit_stage1.py", stage1, [f"frozen.tokenizer={tok}",
                                                                               f"data.train=tokens:{tokens}"]),
           ("extract_discriminative_stage1",)))
  return DemoPrelude(jobs, results=("digit_encoder", "tokenizer_digit", "discriminative_stage1",
                                    "discriminative_stage1_tokens"),
                     overrides={"frozen.ids": tok, "frozen.stage1": stage1, "data.train": "bundled:mnist:train",
                                "evals.reconstruction.features": f"classifier:{workdir('classifier')}"},
                     after=("discriminative_stage1",))


def _sampler_steps(config: dict, layout: TokenLayout) -> int:
  """Stage 1's steps (one per id: the ids lie on the VQ's grid in DiGIT and the MNIST configs) and the pixel
  decoder's (one per token, or MaskGIT's steps)."""
  pixels = config["sample"]["maskgit_steps"] if config["model"]["variant"] == "maskgit" else layout.num_tokens
  return layout.num_tokens + pixels


FAMILY = Family("discriminative", demo_config="mnist_digit.py", demo_tokenizer="tokenizer_vq",
                demo_tokenizer_config="mnist_vq.py",
                description="discriminative tokens (DiGIT): k-means ids of SSL features, then a pixel decoder",
                bench_steps=bench_steps, bench_sampler=bench_sampler, bench_limit=False, order=4,
                bench_sampling=SamplingConfig(**DIGIT_STAGE1), sampler_steps=_sampler_steps,
                demo_prelude=demo_prelude, in_make_demo=False)


def default_config(tokenizer_workdir: str, ids_workdir: str, stage1_workdir: str,
                   **data) -> ml_collections.ConfigDict:
  """A stage-2 config with every key: next-token's, plus `frozen.ids`, `frozen.stage1`, `model.variant` ('ar' or
  'maskgit'), `model.label_smoothing` and the pixel decoder's sampling keys `sample.pixel_*`, `maskgit_steps`,
  `choice_temperature` (the other `sample` keys are stage 1's: DiGIT's top-k 200, no guidance)."""
  c = next_token.default_config(tokenizer_workdir, **data)
  c.task = "discriminative"
  c.frozen.update(ids=ids_workdir, stage1=stage1_workdir)
  c.model.update(variant="ar", class_dropout=0.0, token_dropout=0.0)
  c.sample.update(DIGIT_STAGE1)
  c.sample.update(DIGIT_PIXELS)
  return c


def stage1_config(tokenizer_workdir: str, **data) -> ml_collections.ConfigDict:
  """Stage 1: a next-token config over the ids with DiGIT's label smoothing (0.1) and sampling."""
  c = next_token.default_config(tokenizer_workdir, **data)
  c.model.label_smoothing = 0.1
  c.sample.update(DIGIT_STAGE1)
  return c


def mnist_stage1_config(arg=None) -> ml_collections.ConfigDict:
  """configs/mnist_digit_stage1.py: the CPU-sized next-token setting over the MNIST discriminative ids."""
  arg = parse_arg(arg, runlocal=False, steps=3000, tokenizer="runs/demo/tokenizer_digit")
  c = mnist_config(stage1_config(arg.tokenizer), arg.steps, arg.runlocal)
  c.model.update(size="custom", depth=4, dim=96, num_heads=3, mlp_multiple_of=32, num_classes=10,
                 class_dropout=0.1, token_dropout=0.0)
  c.sample.update(MNIST_STAGE1)
  return c


def mnist_stage2_config(arg=None) -> ml_collections.ConfigDict:
  """configs/mnist_digit.py: the pixel decoder over the demo VQ's tokens from the MNIST ids (`:variant=ar|maskgit`),
  with the reconstruction evaluator at the last step."""
  arg = parse_arg(arg, runlocal=False, steps=1000, variant="ar", tokenizer="runs/demo/tokenizer_vq",
                  ids="runs/demo/tokenizer_digit", stage1="runs/demo/discriminative_stage1")
  c = mnist_config(default_config(arg.tokenizer, arg.ids, arg.stage1), arg.steps, arg.runlocal)
  c.model.update(size="custom", depth=4, dim=96, num_heads=3, mlp_multiple_of=32, num_classes=10, variant=arg.variant)
  c.sample.update(**MNIST_STAGE1, pixel_temperature=1.0, pixel_top_p=0.8, maskgit_steps=8)
  c.evals.reconstruction = reconstruction_eval(c.total_steps)
  return c


def reconstruction_eval(every_steps: int, num_images: int = 500) -> ml_collections.ConfigDict:
  """A `reconstruction` evaluator section (ar_gen/eval/evaluators.py): PSNR of the pixel decoder from true ids and,
  with `features` set to `classifier:DIR`, that classifier's accuracy on those images."""
  return ml_collections.ConfigDict(dict(kind="reconstruction", every_steps=every_steps, num_images=num_images,
                                        batch_size=100, seed=0, features="", grid_examples=10))


def imagenet_stage1_config(arg=None) -> ml_collections.ConfigDict:
  """DiGIT's stage 1 on ImageNet 256 (configs/imagenet256_digit_stage1.py): 16 layers, 1024 wide, 16 heads (219M
  with K = 8192), LlamaGen's recipe otherwise, label smoothing 0.1, top-k 200 without guidance."""
  arg = parse_arg(arg, runlocal=False, tokenizer="runs/imagenet256_digit_k8192")
  c = next_token.imagenet_llamagen_config(f"tokenizer={arg.tokenizer},size=B" + (",runlocal" if arg.runlocal else ""))
  if not arg.runlocal:
    c.model.update(size="custom", depth=16, dim=1024, num_heads=16)
  c.model.label_smoothing = 0.1
  c.sample.update(DIGIT_STAGE1)
  return c


def imagenet_stage2_config(arg=None) -> ml_collections.ConfigDict:
  """The pixel decoder on ImageNet 256 (configs/imagenet256_digit.py, `:variant=ar|maskgit`): LlamaGen-L's sizes
  over ar-gen's VQ-16 (configs/imagenet256_vq16.py) from the 256 DINOv2 ids, LlamaGen's recipe, no class."""
  arg = parse_arg(arg, runlocal=False, variant="ar", tokenizer="runs/imagenet256_vq16",
                  ids="runs/imagenet256_digit_k8192", stage1="runs/imagenet256_digit_stage1")
  c = next_token.imagenet_llamagen_config(f"tokenizer={arg.tokenizer},size=L" + (",runlocal" if arg.runlocal else ""))
  d = default_config(arg.tokenizer, arg.ids, arg.stage1)
  c.task, c.frozen = d.task, d.frozen
  c.model.update(variant=arg.variant, class_dropout=0.0, token_dropout=0.0)
  c.sample.update({**DIGIT_STAGE1, **DIGIT_PIXELS})
  return c


class Task(FrozenTokenizerTask):
  """Stage 2 of the discriminative family: a VQ's tokens from ground-truth ids; sampling runs stage 1 first."""

  def __init__(self, config: ml_collections.ConfigDict, frozen: dict[str, Any]):
    super().__init__(config, frozen)
    if self.tokenizer.config.task != "tokenizer":
      raise ConfigError(f"task discriminative needs frozen.tokenizer to be the VQ tokenizer whose tokens the pixel "
                        f"decoder generates; {self.tokenizer.source} holds a {self.tokenizer.config.task!r} run (the "
                        "discriminative tokenizer goes in frozen.ids)")
    if "ids" not in frozen:
      raise ConfigError("task discriminative needs frozen.ids: the discriminative tokenizer (`ar-gen fit-kmeans "
                        "--encoder ENC --data SPEC --k K --out DIR`)")
    self.ids = frozen["ids"]
    if self.ids.config.task != "discriminative_tokenizer":
      raise ConfigError(f"frozen.ids={self.ids.source!r} holds a {self.ids.config.task!r} run; it must be a "
                        "discriminative tokenizer (`ar-gen fit-kmeans`)")
    self.ids.check_data(config.data)
    self.id_layout = self.ids.layout
    self.stage1 = frozen_stage1(config, frozen, self.ids, "discriminative ids")

  def check_source(self, source: Any) -> None:
    if getattr(source, "meta", None) is not None:
      raise ConfigError(f"data.train={self.config.data.train!r} is a token set; the pixel decoder trains on images "
                        "(each batch gives both the ids and the VQ's tokens), e.g. bundled:mnist:train")
    super().check_source(source)

  def build(self, rngs: nnx.Rngs) -> PixelDecoder:
    return build_pixel_decoder(self.config.model, self.layout, self.id_layout, rngs)

  def ids_module(self, frozen: Any):
    return self.ids.module(None if frozen is None else frozen["ids"])

  def prepare(self, batch: dict[str, jax.Array], frozen: Any) -> dict[str, jax.Array]:
    """The VQ's tokens and the discriminative ids of the batch's images."""
    return {**batch, "tokens": self.tokenizer_module(frozen).encode(batch["image"]),
            "ids": self.ids_module(frozen).encode(batch["image"])}

  def loss(self, model: PixelDecoder, batch: dict, rng: jax.Array, step: jax.Array, frozen: Any):
    del step, frozen
    tokens_BN, ids_BM = batch["tokens"].astype(jnp.int32), batch["ids"].astype(jnp.int32)
    if model.variant == "maskgit":
      weights_BN = maskgit.training_mask(jax.random.fold_in(rng, 1), *tokens_BN.shape)
      inputs_BN = jnp.where(weights_BN, model.mask_id, tokens_BN)
    else:
      weights_BN, inputs_BN = jnp.ones(tokens_BN.shape, bool), tokens_BN
    logits_BSV = model.sequence_logits(ids_BM, inputs_BN, train=True, rng=jax.random.fold_in(rng, 0))
    loss, accuracy = pixel_loss(logits_BSV, tokens_BN, weights_BN, model.num_ids,
                                self.config.model.get("label_smoothing", 0.0))
    return loss, {"token_accuracy": accuracy}, None

  def pixel_sampling_config(self) -> SamplingConfig:
    s = self.config.sample
    return SamplingConfig(temperature=s.pixel_temperature, top_k=s.pixel_top_k, top_p=s.pixel_top_p)

  def pixels_from_ids(self, model: PixelDecoder, ids_BM: jax.Array, rng: jax.Array) -> jax.Array:
    s = self.config.sample
    return pixel_tokens(model, ids_BM, rng, self.pixel_sampling_config(), s.maskgit_steps, s.choice_temperature)

  def stage1_model(self, frozen: Any) -> NextTokenModel:
    if self.stage1 is None:
      raise UserError("sampling a discriminative stage-2 run needs its stage 1: frozen.stage1 is empty; pass "
                      "--config.frozen.stage1=DIR (a next_token run over the same discriminative tokenizer)")
    return self.stage1.module(None if frozen is None else frozen["stage1"])

  def sample_tokens(self, model: PixelDecoder, cond: dict, rng: jax.Array, frozen: Any,
                    cfg: SamplingConfig) -> jax.Array:
    """VQ tokens [B, N]: stage 1's ids with `cfg`, then the pixel decoder (trace under jit)."""
    ids_BM = driver.sample(self.stage1_model(frozen), CategoricalHead(cfg), cond, jax.random.fold_in(rng, 0), cfg)
    return self.pixels_from_ids(model, ids_BM, jax.random.fold_in(rng, 1))

  def reconstruct(self, model: PixelDecoder, images_BHWC: jax.Array, rng: jax.Array, frozen: Any) -> jax.Array:
    """Images [B, H, W, C] in [-1, 1] drawn by the pixel decoder from the true ids of `images` (trace under jit)."""
    return self.decode_images(self.pixels_from_ids(model, self.ids_module(frozen).encode(images_BHWC), rng), frozen)

  def visualize(self, model: PixelDecoder, batch: dict, frozen: Any) -> jax.Array:
    """Rows: the images, their VQ reconstructions, the pixel decoder's images from their true ids, and (with
    stage 1) samples of classes 0, 1, 2, ..."""
    x = batch["image"]
    rows = [x, self.decode_images(self.tokenizer_module(frozen).encode(x), frozen),
            self.reconstruct(model, x, jax.random.PRNGKey(0), frozen)]
    if self.stage1 is not None:
      cond = self.condition(jnp.arange(x.shape[0], dtype=jnp.int32) % self.config.model.num_classes)
      rows.append(self.sample_images(model, cond, jax.random.PRNGKey(0), frozen, self.sampling_config())[0])
    return jnp.stack(rows).astype(x.dtype)
