"""The `ar-gen convert-*` subcommands: released PyTorch checkpoints (LlamaGen, VAR, MAR, DINOv2, LPIPS, pytorch-fid's
Inception) -> ar-gen work directories or weight files (`ar_gen/convert/`)."""

from __future__ import annotations

import os

from ar_gen.cli.flags import Command, overwrite_flag


def _convert_llamagen_arguments(p):
  p.add_argument("--vq", required=True, help="vq_ds16_c2i.pt")
  p.add_argument("--gpt", required=True, help="c2i_B_256.pt (or L, XL, XXL; 256 or 384)")
  p.add_argument("--size", required=True, choices=("B", "L", "XL", "XXL"))
  p.add_argument("--image-size", type=int, default=256)
  p.add_argument("--out", required=True, help="writes OUT/tokenizer and OUT/gpt; sample with --workdir OUT/gpt")
  overwrite_flag(p, "OUT/tokenizer and OUT/gpt of an earlier conversion")


def _convert_llamagen(args, overrides):
  from ar_gen.convert import llamagen  # pylint: disable=g-import-not-at-top
  print(llamagen.convert(args.vq, args.gpt, args.size, args.image_size, args.out, overwrite=args.overwrite))


def _convert_mar_arguments(p):
  p.add_argument("--vae", required=True, help="kl16.ckpt (MAR's KL-16 VAE)")
  p.add_argument("--mar", required=True, help="checkpoint-last.pth of mar_base, mar_large or mar_huge")
  p.add_argument("--size", required=True, choices=("B", "L", "H"))
  p.add_argument("--no-ema", action="store_true", help="convert the 'model' weights instead of 'model_ema'")
  p.add_argument("--image-size", type=int, default=256)
  p.add_argument("--out", required=True, help="writes OUT/tokenizer and OUT/mar; sample with --workdir OUT/mar")
  overwrite_flag(p, "OUT/tokenizer and OUT/mar of an earlier conversion")


def _convert_mar(args, overrides):
  from ar_gen.convert import mar  # pylint: disable=g-import-not-at-top
  print(mar.convert(args.vae, args.mar, args.size, args.out, ema=not args.no_ema, image_size=args.image_size,
                    overwrite=args.overwrite))


def _convert_var_arguments(p):
  p.add_argument("--vae", required=True, help="vae_ch160v4096z32.pth")
  p.add_argument("--var", required=True, help="var_d16.pth (or d20, d24, d30)")
  p.add_argument("--image-size", type=int, default=256)
  p.add_argument("--out", required=True, help="writes OUT/tokenizer and OUT/var; sample with --workdir OUT/var")
  overwrite_flag(p, "OUT/tokenizer and OUT/var of an earlier conversion")


def _convert_var(args, overrides):
  from ar_gen.convert import var  # pylint: disable=g-import-not-at-top
  print(var.convert(args.vae, args.var, args.out, args.image_size, overwrite=args.overwrite))


def _convert_dinov2_arguments(p):
  p.add_argument("checkpoint", help="dinov2_vitb14_reg4_pretrain.pth (DiGIT's encoder; other DINOv2 ViTs too)")
  p.add_argument("--out", required=True, help="a new feature_encoder work directory (fit-kmeans --encoder OUT)")
  p.add_argument("--input-size", type=int, default=224, help="pixels the encoder sees (DiGIT: 224, 16 x 16 patches)")
  p.add_argument("--layer", type=int, default=-3, help="the feature block, negative from the end (DiGIT: -3)")
  p.add_argument("--image-size", type=int, default=256, help="the images of the runs that read it (data.image_size)")
  p.add_argument("--num-heads", type=int, default=None, help="default: width / 64 (DINOv2's)")


def _convert_dinov2(args, overrides):
  from ar_gen.convert import dinov2  # pylint: disable=g-import-not-at-top
  print(dinov2.convert(args.checkpoint, args.out, args.input_size, args.layer, args.image_size, args.num_heads))


def _convert_lpips_arguments(p):
  p.add_argument("vgg", help="torchvision's vgg16-397923af.pth")
  p.add_argument("lin", help="the LPIPS package's weights/v0.1/vgg.pth")
  p.add_argument("--out", required=True, help="output .npz")
  overwrite_flag(p, "an existing --out file")


def _convert_lpips(args, overrides):
  from tokenizers import lpips  # pylint: disable=g-import-not-at-top
  print(lpips.convert_torch_files(args.vgg, args.lin, args.out, overwrite=args.overwrite))


def _convert_inception_arguments(p):
  p.add_argument("pth", help="pt_inception-2015-12-05-6726825d.pth")
  p.add_argument("--out", default=None, help="default: ~/.cache/ar_gen/inception_fid.npz, where `ar-gen fid` looks")
  overwrite_flag(p, "an existing --out file")


def _convert_inception(args, overrides):
  from ar_gen.eval import inception_weights  # pylint: disable=g-import-not-at-top
  print(inception_weights.convert(args.pth, args.out or os.path.expanduser(inception_weights.DEFAULT_FILE),
                                  overwrite=args.overwrite))


COMMANDS = (
    Command("convert-llamagen", "LlamaGen's VQ + class-conditional GPT checkpoints -> work dirs",
            _convert_llamagen_arguments, _convert_llamagen),
    Command("convert-var", "VAR's VQVAE + VAR-d16..d30 checkpoints -> work dirs", _convert_var_arguments,
            _convert_var),
    Command("convert-mar", "MAR's KL-16 VAE + MAR-B/L/H checkpoints (EMA weights) -> work dirs",
            _convert_mar_arguments, _convert_mar),
    Command("convert-dinov2", "DINOv2's ViT checkpoint -> a frozen feature encoder work dir (DiGIT's tokens)",
            _convert_dinov2_arguments, _convert_dinov2),
    Command("convert-lpips", "convert LPIPS VGG weights (PyTorch files) for loss.lpips_path",
            _convert_lpips_arguments, _convert_lpips),
    Command("convert-inception", "pytorch-fid's Inception .pth -> ar-gen's weights file",
            _convert_inception_arguments, _convert_inception),
)
