"""The `ar-gen` command: a table of thin subcommands that parse, load a config and call library functions.

Each entry of `COMMANDS` is a `Command`: its name, help, the arguments it adds, the function it runs, and whether
it takes `--config.KEY=VALUE` overrides (the others refuse them by name). The converters' commands are in
`convert.py`, the bench's in `bench.py`, what they share in `flags.py`. Library imports happen inside the run
functions, so `ar-gen --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ar_gen.cli import bench, convert
from ar_gen.cli.flags import Command, distributed_flags, initialize_distributed, overwrite_flag


# ------------------------------------------------------------------------------------------------- train, compile
def _train_arguments(p):
  p.add_argument("--config", required=True, help="configs/X.py[:ARGS]")
  p.add_argument("--workdir", required=True)
  p.add_argument("--stop-after-steps", type=int, default=None,
                 help="leave (with a checkpoint) after this many steps of this invocation")
  p.add_argument("--allow-config-change", action="store_true",
                 help="continue a work directory trained with another config (else refused, naming the keys)")
  distributed_flags(p)


def _train(args, overrides):
  from ar_gen import config as config_lib  # pylint: disable=g-import-not-at-top
  from ar_gen.train import trainer  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(args.config, overrides)
  initialize_distributed(args)
  metrics = trainer.train(config, args.workdir, stop_after_steps=args.stop_after_steps,
                          allow_config_change=args.allow_config_change)
  print({k: round(v, 4) for k, v in metrics.items()})


def _compile_arguments(p):
  p.add_argument("--config", required=True, help="configs/X.py[:ARGS]")
  p.add_argument("--topology", required=True,
                 help="v5e-16, v6e-64, v4-32, v5p-128 or v5e:4x4; or local (this machine's devices)")
  p.add_argument("--out", default=None, help="also write the report as JSON here")


def _compile(args, overrides):
  from ar_gen import config as config_lib  # pylint: disable=g-import-not-at-top
  from ar_gen.train import aot  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(args.config, overrides)
  result = aot.compile_step(config, aot.topology_devices(args.topology))
  print(aot.format_report(result))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)


# ------------------------------------------------------------------------------------------------- data
def _prepare_imagenet_arguments(p):
  p.add_argument("--input", required=True, help="folder with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, "
                 "or with train/nXXXXXXXX/*.JPEG and val/nXXXXXXXX/*.JPEG")
  p.add_argument("--data-dir", required=True, help="TFDS data dir to write imagenet2012 into (a local path or a "
                 "bucket URL); train on it with --config.data.data_dir=DIR")
  p.add_argument("--splits", default="train,validation", help="comma-separated: train, validation")
  p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes writing shards")
  overwrite_flag(p, "a prepared imagenet2012 in DIR")


def _prepare_imagenet(args, overrides):
  from ar_gen.data import imagenet  # pylint: disable=g-import-not-at-top
  print(imagenet.prepare(args.input, args.data_dir, tuple(s for s in args.splits.split(",") if s),
                         workers=args.workers, overwrite=args.overwrite))


# ------------------------------------------------------------------------------------------------- tokenizers
def _eval_tokenizer_arguments(p):
  p.add_argument("--workdir", required=True)
  p.add_argument("--max-examples", type=int, default=None)
  p.add_argument("--batch-size", type=int, default=100)
  distributed_flags(p)


def _eval_tokenizer(args, overrides):
  from ar_gen.eval import tokenizer_eval  # pylint: disable=g-import-not-at-top
  initialize_distributed(args)
  print(tokenizer_eval.evaluate(args.workdir, max_examples=args.max_examples, batch_size=args.batch_size))


def _extract_tokens_arguments(p):
  p.add_argument("--workdir", required=True, help="the tokenizer's work directory")
  p.add_argument("--data", required=True, help="dataset spec, e.g. bundled:mnist:train or tfds:imagenet2012:train")
  p.add_argument("--out", required=True, help="output directory; train on it with data.train=tokens:OUT")
  p.add_argument("--batch-size", type=int, default=256)
  overwrite_flag(p, "a token set already in OUT")


def _extract_tokens(args, overrides):
  from ar_gen.commands import extract_tokens  # pylint: disable=g-import-not-at-top
  print(extract_tokens.extract(args.workdir, args.data, args.out, args.batch_size, overwrite=args.overwrite))


def _cluster_codebook_arguments(p):
  p.add_argument("--workdir", required=True, help="a trained VQ tokenizer's work directory")
  p.add_argument("--k", type=int, required=True, help="the number of clusters (coarse labels); CTF: 512 of 16384")
  p.add_argument("--out", required=True, help="a new directory: the clustered tokenizer's work directory")
  p.add_argument("--metric", default="auto", help="auto (cosine for an l2-normalised codebook), cosine, euclidean")
  p.add_argument("--iters", type=int, default=50, help="Lloyd iterations after k-means++")
  p.add_argument("--seed", type=int, default=0)


def _cluster_codebook(args, overrides):
  from ar_gen.commands import cluster_codebook  # pylint: disable=g-import-not-at-top
  print(cluster_codebook.cluster(args.workdir, args.k, args.out, args.metric, args.iters, args.seed))


def _fit_kmeans_arguments(p):
  p.add_argument("--encoder", required=True, help="a feature_encoder work directory (convert-dinov2, or an SSL run)")
  p.add_argument("--data", required=True, help="the dataset whose features are clustered (e.g. bundled:mnist:train)")
  p.add_argument("--k", type=int, default=0, help="the number of clusters (token ids); DiGIT: 8192")
  p.add_argument("--out", required=True, help="a new directory: the discriminative tokenizer's work directory")
  p.add_argument("--examples", type=int, default=10000, help="images drawn at random from --data")
  p.add_argument("--vectors", type=int, default=0, help="patch vectors kept of their features, at random (0: all)")
  p.add_argument("--iters", type=int, default=20, help="Lloyd iterations after k-means++")
  p.add_argument("--layer", type=int, default=None, help="the feature block (default: the encoder's encoder.layer)")
  p.add_argument("--centroids", default=None, help="a .npy [K, D] of centroids to use instead of fitting")
  p.add_argument("--seed", type=int, default=0)


def _fit_kmeans(args, overrides):
  from ar_gen.commands import fit_kmeans  # pylint: disable=g-import-not-at-top
  if not args.k and args.centroids is None:
    raise ValueError("fit-kmeans needs --k K (or --centroids FILE.npy)")
  print(fit_kmeans.fit(args.encoder, args.data, args.k, args.out, args.examples, args.vectors, args.iters,
                       args.seed, args.layer, args.centroids))


# ------------------------------------------------------------------------------------------------- sampling
def _sample_arguments(p):
  p.add_argument("--workdir", required=True)
  p.add_argument("--num-images", type=int, required=True)
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--classes", default="all", help="'all' or comma-separated class ids, e.g. 0,3,7")
  p.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance scale (1 = off)")
  p.add_argument("--cfg-schedule", choices=("constant", "linear"), default=None)
  p.add_argument("--cfg-interval", default=None, help="LO,HI: guide only this fraction of the steps")
  p.add_argument("--temperature", type=float, default=None, help="0 = greedy")
  p.add_argument("--top-k", type=int, default=None)
  p.add_argument("--top-p", type=float, default=None)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--num-shards", type=int, default=1,
                 help="split the sampling into this many independent jobs (merge with `ar-gen merge-samples`)")
  p.add_argument("--shard-index", type=int, default=None, help="with --num-shards: this job's shard, 0 .. K-1")
  p.add_argument("--draft-workdir", default=None,
                 help="speculative decoding with this draft model (trained on the same tokenizer; docs/speculative.md)")
  p.add_argument("--jacobi", action="store_true",
                 help="speculative decoding without a draft model (speculative Jacobi decoding; token ids)")
  p.add_argument("--gamma", type=int, default=None, help="speculative: drafts per window (default 4)")
  p.add_argument("--prefill", type=float, default=None,
                 help="speculative: the fraction of the tokens the target samples alone first (default 0)")
  p.add_argument("--out", required=True)
  overwrite_flag(p, "earlier samples in OUT (samples.npz, grid.png, images/, speculative.json; or this shard's "
                     "files)")
  distributed_flags(p)


def _interval(text: str | None, flag: str) -> tuple[float, float] | None:
  """`LO,HI` as two floats (their range is SamplingConfig's to check)."""
  if text is None:
    return None
  try:
    values = tuple(float(v) for v in text.split(","))
  except ValueError:
    values = ()
  if len(values) != 2:
    raise ValueError(f"{flag} takes LO,HI (two numbers, the guided fraction of the steps), got {text!r}")
  return values


def _sample(args, overrides):
  from ar_gen.commands import sample  # pylint: disable=g-import-not-at-top
  interval = _interval(args.cfg_interval, "--cfg-interval")
  initialize_distributed(args)
  result = sample.sample(args.workdir, args.out, args.num_images, args.batch_size, args.classes, args.seed,
                         overwrite=args.overwrite, overrides=tuple(overrides), num_shards=args.num_shards,
                         shard_index=args.shard_index, cfg_scale=args.cfg_scale, temperature=args.temperature,
                         top_k=args.top_k, top_p=args.top_p, cfg_schedule=args.cfg_schedule, cfg_interval=interval,
                         draft_workdir=args.draft_workdir, gamma=args.gamma, prefill=args.prefill,
                         jacobi=args.jacobi)
  print(result)


def _merge_samples_arguments(p):
  p.add_argument("--out", required=True, help="the --out of the sharded `ar-gen sample` jobs")
  overwrite_flag(p, "earlier merged samples in OUT")


def _merge_samples(args, overrides):
  from ar_gen.commands import sample  # pylint: disable=g-import-not-at-top
  print(sample.merge(args.out, overwrite=args.overwrite))


# ------------------------------------------------------------------------------------------------- evaluation
def _fid_arguments(p):
  p.add_argument("--samples", nargs="+", required=True,
                 help="sample sets: .npz (ADM), image folders, or dataset specs as in training "
                 "(folder:PATH, tfds:NAME:SPLIT, bundled:mnist:SPLIT)")
  p.add_argument("--ref", required=True, help="reference: .npz (images, mu/sigma, or both as ADM's reference "
                 "batches: FID from its mu/sigma, precision/recall from its images), folder or dataset spec")
  p.add_argument("--features", default="inception", help="inception, or classifier:DIR (a trained classifier)")
  p.add_argument("--inception", default=None, help="converted Inception weights (else $AR_GEN_INCEPTION, ~/.cache)")
  p.add_argument("--image-size", type=int, default=256, help="size dataset specs are read at (Inception)")
  p.add_argument("--batch-size", type=int, default=200)
  p.add_argument("--k", type=int, default=3, help="nearest neighbours for precision and recall")
  p.add_argument("--splits", type=int, default=10, help="Inception-score splits")
  p.add_argument("--cache-dir", default=None, help="reference statistics cache (default ~/.cache/ar_gen/fid)")
  p.add_argument("--out", default=None, help="results JSON")
  overwrite_flag(p, "an existing --out file")


def _fid(args, overrides):
  from ar_gen.eval import fid  # pylint: disable=g-import-not-at-top
  fid.evaluate(args.samples, args.ref, args.features, args.inception, args.image_size, args.batch_size, args.k,
               args.splits, args.cache_dir, args.out, overwrite=args.overwrite)


def _spectrum_arguments(p):
  p.add_argument("sets", nargs="+", help="image sets as `ar-gen fid` reads them: .npz, image folders, dataset specs "
                 "(e.g. runs/x/samples.npz bundled:mnist:test)")
  p.add_argument("--image-size", type=int, default=256, help="size dataset specs are read at")
  p.add_argument("--channels", type=int, default=3, help="channels dataset specs are read with (1: luma)")
  p.add_argument("--resize", default="crop", choices=("crop", "pad"), help="how dataset specs are resized")
  p.add_argument("--edges", default="0.3333,0.6667",
                 help="low / mid and mid / high edges as fractions of the Nyquist frequency")
  p.add_argument("--out", default=None, help="results JSON (with each set's radially averaged profile)")
  overwrite_flag(p, "an existing --out file")


def _spectrum(args, overrides):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ar_gen.eval import spectrum  # pylint: disable=g-import-not-at-top
  try:
    edges = tuple(float(e) for e in args.edges.split(","))
  except ValueError:
    edges = ()
  if len(edges) != 2:
    raise ValueError(f"--edges {args.edges!r}: two comma-separated numbers, e.g. 0.3333,0.6667")
  data = ml_collections.ConfigDict(dict(eval="", data_dir="", image_size=args.image_size, channels=args.channels,
                                        resize=args.resize))
  spectrum.evaluate(args.sets, data, edges, args.out, overwrite=args.overwrite)


# ------------------------------------------------------------------------------------------------- demo
def _demo_arguments(p):
  p.add_argument("--out", default="runs/demo")
  p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
  p.add_argument("--stages", default="default",
                 help="comma-separated of tokenizers, tokenizer_vq, classifier and the families (next_token, "
                      "next_scale, ...); 'default' (all but the LFQ tokenizer) or 'all'")
  overwrite_flag(p, "an earlier demo's results in OUT")


def _demo(args, overrides):
  from ar_gen import demo  # pylint: disable=g-import-not-at-top
  demo.run(args.out, quick=args.quick, stages=args.stages, overwrite=args.overwrite)


# ------------------------------------------------------------------------------------------------- the table
COMMANDS = (
    Command("train", "train a model from a config file", _train_arguments, _train, overrides=True,
            description="Train from configs/X.py[:ARGS]; override keys with --config.KEY=VALUE."),
    Command("compile", "compile the train step for a TPU topology (no TPU needed) or this machine, and report "
            "memory per device", _compile_arguments, _compile, overrides=True,
            description="A TPU topology needs libtpu: pip install -e '.[tpu]'. Frozen components need only "
                        "their config (no checkpoint)."),
    Command("prepare-imagenet", "ImageNet's archives or folders -> tfds:imagenet2012 as array_record (no "
            "TensorFlow)", _prepare_imagenet_arguments, _prepare_imagenet,
            description="Writes DIR/imagenet2012/<TFDS's version>/ as TFDS's imagenet2012 builder does, in "
                        "parallel; a rerun keeps the shards an interrupted run finished (--overwrite starts afresh; "
                        "docs/data.md)."),
    Command("eval-tokenizer", "PSNR, SSIM, codebook usage of a trained tokenizer", _eval_tokenizer_arguments,
            _eval_tokenizer),
    Command("sample", "class-conditional samples from a trained AR model of any family", _sample_arguments, _sample,
            overrides=True,
            description="Writes OUT/samples.npz (arr_0 uint8 [N,H,W,C], arr_1 labels, in a shuffled order), "
                        "OUT/images/*.png and OUT/grid.png. Sampling flags default to the run's config (section "
                        "sample); --config.KEY=VALUE overrides the run's config (e.g. --config.model.attn_impl=xla). "
                        "Batches are sharded over every device of every process (same images as on one device)."),
    Command("merge-samples", "merge the shards of `ar-gen sample --num-shards K` into one samples.npz",
            _merge_samples_arguments, _merge_samples),
    Command("extract-tokens", "encode a dataset once with a trained tokenizer (-> tokens:OUT)",
            _extract_tokens_arguments, _extract_tokens),
    Command("cluster-codebook", "k-means over a VQ codebook -> a coarse-label tokenizer (coarse-to-fine)",
            _cluster_codebook_arguments, _cluster_codebook),
    Command("fit-kmeans", "k-means over a feature encoder's features -> a discriminative tokenizer (DiGIT)",
            _fit_kmeans_arguments, _fit_kmeans),
    Command("fid", "FID, IS, precision/recall of sample sets against a reference", _fid_arguments, _fid),
    Command("spectrum", "low / mid / high frequency power of image sets (samples and data side by side)",
            _spectrum_arguments, _spectrum),
    *convert.COMMANDS,
    bench.COMMAND,
    Command("demo", "the CPU demo: train, sample and evaluate every family on the bundled MNIST", _demo_arguments,
            _demo),
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="ar-gen", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  for command in COMMANDS:
    p = sub.add_parser(command.name, help=command.help, description=command.description or command.help)
    command.arguments(p)
    p.set_defaults(command=command.name, spec=command)
  return parser


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.KEY=VALUE` (or `--config.KEY VALUE`) overrides from the other arguments."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg.startswith("--config."):
      body = arg[len("--config."):]
      if "=" not in body:
        if i + 1 >= len(argv):
          raise SystemExit(f"ar-gen: {arg} needs a value")
        body, i = f"{body}={argv[i + 1]}", i + 1
      overrides.append(body)
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


EXPECTED_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                   PermissionError, FloatingPointError)  # with ar_gen.errors.UserError: bad input, said in one line


QUIET_MESSAGES = ("read_only=True, setting", "Given directory is read only")  # Orbax on every read-only open


class _DropMessages(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return not any(m in record.getMessage() for m in QUIET_MESSAGES)


def _quiet_libraries() -> None:
  """Library loggers at WARNING, Orbax's notes on read-only opens dropped, and asyncio's 'Event loop is closed'
  noise of Orbax's background threads off."""
  for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  logging.getLogger("absl").addFilter(_DropMessages())
  logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
  """Runs one command; expected failures end in one line `ar-gen CMD: error: ...` and exit status 2 (`--debug`,
  anywhere on the line, or AR_GEN_DEBUG=1, adds the traceback), Ctrl-C in 'interrupted' and 130."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  _quiet_libraries()
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv or os.environ.get("AR_GEN_DEBUG", "") not in ("", "0")
  argv = [a for a in argv if a != "--debug"]
  rest, overrides = split_overrides(argv)
  args = build_parser().parse_args(rest)
  if overrides and not args.spec.overrides:
    raise SystemExit(f"ar-gen: unrecognized arguments: {' '.join('--config.' + o for o in overrides)}")
  from ar_gen.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    args.spec.run(args, overrides)
  except (UserError, *EXPECTED_ERRORS) as e:
    if debug:
      raise
    print(f"ar-gen {args.command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    if debug:
      raise
    print(f"ar-gen {args.command}: interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
