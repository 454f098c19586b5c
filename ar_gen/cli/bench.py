"""The `ar-gen bench` subcommand: speed measurements behind `ar_gen/bench/` (tables; `--out FILE.json`)."""

from __future__ import annotations

from ar_gen.cli.flags import Command, ints, shapes


def _bench_arguments(p):
  p.add_argument("target", choices=("sample", "attention", "fid", "roofline", "speculative"),
                 help="sample: next-token sampling, cached vs uncached, every family's sampler vs next-token, and "
                      "each family as users sample against the machine's limit; attention: kernel vs XLA vs cuDNN, "
                      "ms and TFLOP/s; fid: Inception images/s vs pytorch-fid; roofline: this machine's fp32 matmul "
                      "rate and weight-read bandwidth; speculative: a trained run's speculative sampling vs its "
                      "plain sampling (--workdir, --draft-workdir or --jacobi, --gammas)")
  p.add_argument("--size", default="B", help="model size preset: B, L, XL, XXL (LlamaGen) or tiny")
  p.add_argument("--batch-sizes", default="1,8,64")
  p.add_argument("--tokens", type=int, default=256, help="sequence length (a square token grid)")
  p.add_argument("--vocab-size", type=int, default=16384)
  p.add_argument("--num-classes", type=int, default=1000)
  p.add_argument("--positions", default="16,240", help="two positions whose cached step times are compared")
  p.add_argument("--scales", default=None, help="sample: next-scale sides (default: VAR's, up to the grid side)")
  p.add_argument("--min-seconds", type=float, default=2.0, help="time each measurement for at least this long")
  p.add_argument("--var-d16", action="store_true",
                 help="sample: also VAR-d16 (310M) + its VQVAE decode to 256 px, VAR's sampling settings")
  p.add_argument("--read-mib", type=int, default=512, help="sample, roofline: MiB of weights the bandwidth reads")
  p.add_argument("--shapes", default="8x16x680x64,8x16x1024x64,4x16x4096x128", help="attention: BxHxLxD,...")
  p.add_argument("--decode-lengths", default="256,680,4096", help="attention: KV cache lengths for decode")
  p.add_argument("--impls", default=None, help="attention: e.g. pallas,xla,cudnn (default: those this backend has)")
  p.add_argument("--dtype", default=None, help="attention: float32 or bfloat16 (default: bfloat16, float32 on CPU)")
  p.add_argument("--block-q", type=int, default=128, help="attention: kernel query block")
  p.add_argument("--block-k", type=int, default=128, help="attention: kernel key block")
  p.add_argument("--no-check", action="store_true", help="attention: skip the kernel-vs-reference check")
  p.add_argument("--num-images", type=int, default=64, help="fid: images to time")
  p.add_argument("--batch-size", type=int, default=16, help="fid: batch size of both implementations")
  p.add_argument("--image-size", type=int, default=256, help="fid: size of the random images")
  p.add_argument("--torch-python", default=None, help="fid: a python with torch + pytorch-fid (default: this one)")
  p.add_argument("--workdir", default=None, help="speculative: the target run")
  p.add_argument("--draft-workdir", default=None, help="speculative: the draft run")
  p.add_argument("--jacobi", action="store_true", help="speculative: draft-free (speculative Jacobi decoding)")
  p.add_argument("--gammas", default="2,4", help="speculative: windows to time")
  p.add_argument("--prefill", type=float, default=0.0, help="speculative: target-only fraction of the tokens")
  p.add_argument("--out", default=None, help="also write the results as JSON here")


def _bench(args, overrides):
  if args.target == "sample":
    from ar_gen.bench import sample as bench_sample  # pylint: disable=g-import-not-at-top
    batches = ints(args.batch_sizes, "--batch-sizes")
    positions = ints(args.positions, "--positions")
    if len(positions) != 2:
      raise ValueError(f"--positions takes two positions, e.g. 16,240; got {args.positions!r}")
    bench_sample.run(args.size, batches, args.tokens, args.vocab_size, args.num_classes, positions,
                     args.min_seconds, args.out, ints(args.scales, "--scales") if args.scales else None,
                     args.var_d16, args.read_mib)
  elif args.target == "speculative":
    from ar_gen.bench import speculative  # pylint: disable=g-import-not-at-top
    if not args.workdir:
      raise ValueError("bench speculative needs --workdir (the target run)")
    speculative.run(args.workdir, args.draft_workdir, args.jacobi, ints(args.gammas, "--gammas"),
                    ints(args.batch_sizes, "--batch-sizes"), args.prefill, args.min_seconds, args.out)
  elif args.target == "roofline":
    from ar_gen.bench import roofline  # pylint: disable=g-import-not-at-top
    roofline.run(args.min_seconds, args.read_mib, args.out)
  elif args.target == "attention":
    from ar_gen.bench import attention as bench_attention  # pylint: disable=g-import-not-at-top
    bench_attention.run(shapes(args.shapes), ints(args.decode_lengths, "--decode-lengths"),
                        tuple(args.impls.split(",")) if args.impls else None, args.dtype, args.block_q, args.block_k,
                        args.min_seconds, not args.no_check, args.out)
  elif args.target == "fid":
    from ar_gen.bench import fid as bench_fid  # pylint: disable=g-import-not-at-top
    bench_fid.run(args.num_images, args.batch_size, args.image_size, args.torch_python, args.out)


COMMAND = Command("bench", "speed measurements (tables; --out FILE.json)", _bench_arguments, _bench)
