"""The ImageNet configs follow their official recipes value by value, and run one `:runlocal` step on TFDS mock data.

RECIPES holds, for every config and size, the official code's value of each config key, each with the file and line
of the official repository that sets it: VAR = FoundationVision/VAR@78b9539, LlamaGen = FoundationVision/LlamaGen@
ce98ec4. A config that drifts from them fails here. What ar-gen does differently on purpose is in DIFFERENCES
(official value, ar-gen's value), and each of those keys is explained in docs/recipes.md.
"""

import math
import os

import pytest
import tensorflow_datasets as tfds

from ar_gen import config as config_lib
from ar_gen.train import metrics_log, trainer
from tests.conftest import CONFIGS, REPO

# ------------------------------------------------------------------------------------------ VAR (next-scale)
# iterations per epoch: ceil(1281167 / bs), the sampler fills the last batch (utils/data_sampler.py:75)
VAR_STEPS_PER_EPOCH = {768: 1669, 1024: 1252}

VAR_COMMON = {
    "optimizer.b1": 0.9, "optimizer.b2": 0.95,  # train.py:118-119 AdamW(betas=(0.9, 0.95))
    "optimizer.weight_decay": 0.05,  # utils/arg_util.py:43 twd=0.05
    "optimizer.grad_clip": 2.0,  # utils/arg_util.py:45 tclip=2.
    "optimizer.schedule": "linear",  # utils/arg_util.py:57 sche='lin0'; utils/lr_control.py:25-28 linear to wpe
    "optimizer.hold_fraction": 0.05,  # utils/lr_control.py:26 lin0: T = 0.05 of the post-warmup steps at peak lr
    "model.class_dropout": 0.1,  # models/__init__.py:32 cond_drop_rate=0.1
    "model.mlp_ratio": 4.0,  # models/var.py:24 mlp_ratio=4.
    "model.norm_eps": 1e-6,  # models/__init__.py:32 norm_eps=1e-6
    "data.random_flip": False,  # utils/arg_util.py:75 hflip=False; no README command sets it
    "data.image_size": 256,  # README.md:132 "d16, 256x256" (pn 1_2_..._16 x patch 16)
    "ema_decay": 0.0,  # train.py / trainer.py keep no EMA
    "sample.cfg_scale": 2.5, "sample.cfg_schedule": "linear",  # README.md:155 cfg=1.5 (ar-gen's scale = 1 + cfg)
    "sample.top_k": 900, "sample.top_p": 0.96, "sample.temperature": 1.0,  # README.md:155 top_k=900, top_p=0.96
}


def _var(depth, bs, tblr, ep, wpe, alng):
  """VAR's README command for `depth`: --bs, --tblr (utils/arg_util.py:41 default 1e-4), --ep, --wpe, --alng."""
  steps = ep * VAR_STEPS_PER_EPOCH[bs]
  return {**VAR_COMMON,
          "model.depth": depth,
          "batch_size": bs,  # --bs
          "optimizer.lr": tblr * bs / 256,  # utils/arg_util.py:260 tlr = tblr * glb_batch_size / 256
          "total_steps": steps,  # --ep epochs
          "optimizer.warmup_steps": steps // 50,  # utils/arg_util.py:263-264 wp = ep / 50 epochs
          "optimizer.end_lr_factor": wpe,  # --wpe: final lr ratio (utils/lr_control.py:28)
          "model.adaln_gate_init": alng,  # --alng: ada_lin.w[gamma channels] *= alng (models/var.py:281)
          "model.drop_path": 0.1 * depth / 24}  # models/__init__.py:21 dpr = 0.1 * depth / 24


RECIPES = {
    "imagenet256_var.py:depth=16": _var(16, bs=768, tblr=1e-4, ep=200, wpe=0.1, alng=1e-3),  # README.md:134
    "imagenet256_var.py:depth=20": _var(20, bs=768, tblr=1e-4, ep=250, wpe=0.1, alng=1e-3),  # README.md:137
    "imagenet256_var.py:depth=24": _var(24, bs=768, tblr=8e-5, ep=350, wpe=0.01, alng=1e-4),  # README.md:140
    "imagenet256_var.py:depth=30": _var(30, bs=1024, tblr=8e-5, ep=350, wpe=0.01, alng=1e-5),  # README.md:143
}
VAR_SIZES = {d: (d, 64 * d, d) for d in (16, 20, 24, 30)}  # models/__init__.py:19-20 heads = depth, width = 64 depth

# ------------------------------------------------------------------------------------------ NFIG (next-frequency)
# NFIG (arXiv 2503.07076) released no code: its numbers come from the paper, the rest is VAR-d16's recipe.
RECIPES["imagenet256_nfig.py"] = {
    **{k: v for k, v in _var(16, bs=768, tblr=8e-5, ep=350, wpe=0.1, alng=1e-3).items() if not k.startswith("sample.")},
    "task": "next_frequency",
    "sample.cfg_scale": 4.5, "sample.top_k": 990, "sample.top_p": 1.0,  # the paper: CFG 4.5, top-k 990
}
RECIPES["imagenet256_nfig_tok.py"] = {
    "model.quantizer": "frequency", "model.frequency.band_rule": "bins_quantile",
    "model.frequency.codebook_size": 4096, "model.frequency.code_dim": 32,  # VAR's VQVAE, as NFIG
    "model.frequency.scales": (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),  # 10 bands on VAR's maps, 680 tokens
}

# ------------------------------------------------------------------------------------------ LlamaGen (next-token)
LLAMAGEN_COMMON = {  # autoregressive/train/train_c2i.py (train_c2i_fsdp.py:366-384 has the same defaults)
    "batch_size": 256,  # train_c2i.py:286 --global-batch-size 256
    "total_steps": 300 * (1_281_167 // 256),  # :280 --epochs 300; :139 drop_last=True
    "optimizer.lr": 1e-4,  # :281 --lr 1e-4
    "optimizer.warmup_steps": 0, "optimizer.end_lr_factor": 1.0,  # no lr scheduler in train_c2i.py: constant lr
    "optimizer.weight_decay": 0.05,  # :282 --weight-decay 5e-2 (on >= 2-D tensors, :35-36)
    "optimizer.b1": 0.9, "optimizer.b2": 0.95,  # :283-284
    "optimizer.grad_clip": 1.0,  # :285 --max-grad-norm 1.0
    "model.dropout": 0.1,  # :271 --dropout-p 0.1 -> resid_dropout_p, ffn_dropout_p (:108-109)
    "model.token_dropout": 0.1,  # :272 --token-dropout-p 0.1
    "model.class_dropout": 0.1,  # autoregressive/models/gpt.py:43 class_dropout_prob=0.1
    "model.dtype": "bfloat16", "model.param_dtype": "float32",  # :292 --mixed-precision bf16 (autocast, :193)
    "model.mlp_multiple_of": 256, "model.norm_eps": 1e-5, "model.rope_base": 10000.0,  # gpt.py:29-32
    "model.qk_norm": False, "model.num_kv_heads": 0,  # gpt.py:28 n_kv_head=None
    "ema_decay": 0.0,  # :269 --ema is off unless passed; GETTING_STARTED.md:26-39 never passes it
    "data.image_size": 256,  # the 16x16-token models of README.md:55,57 (c2i_B_256.pt, c2i_L_256.pt)
    "sample.top_k": 0, "sample.top_p": 1.0, "sample.temperature": 1.0,  # sample_c2i_ddp.py:184-186
    "sample.cfg_schedule": "constant", "sample.cfg_interval": (0.0, 1.0),  # sample_c2i_ddp.py:179 cfg-interval -1
}
RECIPES.update({
    f"imagenet256_llamagen.py:size={size}": {**LLAMAGEN_COMMON, "model.size": size, "sample.cfg_scale": cfg,
                                              "mesh.fsdp": -1 if fsdp else 1}
    for size, cfg, fsdp in (
        ("B", 2.0, False),  # GETTING_STARTED.md:45 --cfg-scale 2.0; DDP (:26)
        ("L", 2.0, False),  # GETTING_STARTED.md:47 --cfg-scale 2.0; DDP (:28)
        ("XL", 1.75, False),  # GETTING_STARTED.md:49 --cfg-scale 1.75; DDP (:30)
        ("XXL", 1.75, True),  # GETTING_STARTED.md:51 --cfg-scale 1.75; FSDP (:37)
        ("3B", 1.65, True),  # GETTING_STARTED.md:53 --cfg-scale 1.65; FSDP (:39)
    )})
LLAMAGEN_SIZES = {  # (layers, width, heads), autoregressive/models/gpt.py
    "B": (12, 768, 12),  # gpt.py:461 GPT_B
    "L": (24, 1024, 16),  # gpt.py:458 GPT_L
    "XL": (36, 1280, 20),  # gpt.py:455 GPT_XL
    "XXL": (48, 1536, 24),  # gpt.py:452 GPT_XXL
    "3B": (24, 3200, 32),  # gpt.py:442 GPT_3B
}

# ------------------------------------------------------------------------------------------ CTF (coarse-to-fine)
# CTF (arXiv 2503.16194) released no code: stage 1 is LlamaGen's recipe over K = 512 labels, sampled with the
# paper's stage-1 guidance 2.0 and temperature 1.1; stage 2 (343M, LlamaGen-L's sizes) with temperature 1.1, top-k off.
CTF_SAMPLING = {"sample.cfg_scale": 2.0, "sample.temperature": 1.1, "sample.top_k": 0, "sample.top_p": 1.0}
RECIPES.update({
    f"imagenet256_ctf_stage1.py:size={size}": {**LLAMAGEN_COMMON, **CTF_SAMPLING, "model.size": size,
                                                "task": "next_token", "frozen.tokenizer": "runs/imagenet256_ctf_k512"}
    for size in ("B", "L", "XL")})
RECIPES["imagenet256_ctf.py"] = {
    **{k: v for k, v in LLAMAGEN_COMMON.items() if k not in ("model.class_dropout", "model.token_dropout")},
    **CTF_SAMPLING, "task": "coarse_to_fine", "model.size": "L", "model.cluster_mask": True,
    "sample.fine_temperature": 1.1, "sample.fine_top_k": 0,
    "model.class_dropout": 0.0, "model.token_dropout": 0.0,  # no guidance in stage 2: nothing to drop the class for
}

# ------------------------------------------------------------------------------------------ DiGIT
# DiGIT (arXiv 2410.12490, DAMO-NLP-SG/DiGIT): stage 1 a 16-layer, 1024-wide GPT over K = 8192 k-means ids of
# DINOv2-B/14-reg4 features, label smoothing 0.1, top-k 200, no guidance; the pixel decoder ignores the class and
# samples with top-p 0.8 (AR) or 8 MaskGIT steps. ar-gen's pixel decoder takes LlamaGen-L's sizes over its VQ-16.
DIGIT_STAGE1 = {"sample.cfg_scale": 1.0, "sample.top_k": 200, "sample.temperature": 1.0}
RECIPES["imagenet256_digit_stage1.py"] = {
    **DIGIT_STAGE1, "task": "next_token", "model.depth": 16, "model.dim": 1024, "model.num_heads": 16,
    "model.label_smoothing": 0.1, "model.num_classes": 1000, "frozen.tokenizer": "runs/imagenet256_digit_k8192"}
RECIPES.update({f"imagenet256_digit.py:variant={variant}": {
    **DIGIT_STAGE1, "task": "discriminative", "model.variant": variant, "model.size": "L",
    "sample.pixel_top_p": 0.8, "sample.maskgit_steps": 8, "model.class_dropout": 0.0,
    "frozen.ids": "runs/imagenet256_digit_k8192", "frozen.stage1": "runs/imagenet256_digit_stage1",
    "frozen.tokenizer": "runs/imagenet256_vq16"} for variant in ("ar", "maskgit")})

# ------------------------------------------------------------------------------------------ LlamaGen's VQ-16
RECIPES["imagenet256_vq16.py"] = {  # tokenizer/tokenizer_image/vq_train.py (GETTING_STARTED.md:9: --vq-model VQ-16)
    "model.vq.codebook_size": 16384,  # vq_train.py:283
    "model.vq.code_dim": 8,  # vq_train.py:284
    "model.vq.normalize": True,  # vq_train.py:285 --codebook-l2-norm (default True)
    "model.vq.beta": 0.25,  # vq_train.py:288 --commit-loss-beta 0.25 (entropy ratio 0: :287)
    "model.channels": 128, "model.channel_mult": (1, 1, 2, 2, 4),  # vq_model.py:21, :65 ch=128
    "model.num_res_blocks": 2, "model.z_channels": 256,  # vq_model.py:65, :23
    "loss.rec": "l2", "loss.rec_weight": 1.0,  # vq_train.py:289-290
    "loss.lpips_weight": 1.0,  # vq_train.py:291 --perceptual-weight 1.0
    "loss.ms_ssim_weight": 0.0,  # vq_loss.py:139-142: rec + perceptual + GAN + codebook terms only
    "loss.disc_weight": 0.5,  # vq_train.py:292 --disc-weight 0.5
    "loss.disc_start": 20_000,  # vq_train.py:293 --disc-start 20000
    "loss.disc_adaptive_weight": False,  # vq_loss.py:51 disc_adaptive_weight=False (vq_train.py:92-103 keeps it)
    "loss.disc_channels": 64, "loss.disc_layers": 3,  # vq_loss.py:50 disc_dim=64, disc_num_layers=3
    "batch_size": 128,  # vq_train.py:308 --global-batch-size 128
    "total_steps": 40 * (1_281_167 // 128),  # vq_train.py:302 --epochs 40; :135 drop_last=True
    "optimizer.lr": 1e-4,  # vq_train.py:303
    "optimizer.b1": 0.9, "optimizer.b2": 0.95,  # vq_train.py:305-306
    "optimizer.weight_decay": 0.0,  # vq_train.py:110 torch.optim.Adam(...) takes no weight decay
    "optimizer.warmup_steps": 0, "optimizer.end_lr_factor": 1.0,  # no lr scheduler in vq_train.py
    "optimizer.grad_clip": 1.0,  # vq_train.py:307
    "ema_decay": 0.0,  # vq_train.py:282 --ema off unless passed; GETTING_STARTED.md:9 does not
    "data.random_flip": True,  # vq_train.py:116 RandomHorizontalFlip
    "data.image_size": 256,  # GETTING_STARTED.md:9 --image-size 256
}

# What ar-gen does differently on purpose: {config: {key: (official, ar-gen's)}}; docs/recipes.md says why.
DIFFERENCES = {
    "imagenet256_var.py:depth=16": {"model.dtype": ("float16 (--fp16=1)", "bfloat16"),
                                    "data.resize": ("288 Lanczos + random 256 crop", "crop")},
    "imagenet256_var.py:depth=30": {"optimizer.weight_decay": ("0.05 -> 0.08 (--twde=0.08)", 0.05)},
    "imagenet256_llamagen.py:size=B": {"data.resize": ("codes of ten crops of a 1.1x center crop + flips", "crop")},
    "imagenet256_vq16.py": {"model.dtype": ("bfloat16 autocast (vq_train.py:314)", "float32"),
                            "data.resize": ("random_crop_arr: random 0.8-1 crop", "crop")},
}


def _load(spec):
  return config_lib.load_config(os.path.join(CONFIGS, spec))


def _same(ours, official) -> bool:
  """Equal; numbers (not bools) up to float rounding (8e-5 * 768 / 256 is computed, not typed)."""
  numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (ours, official))
  return math.isclose(ours, official, rel_tol=1e-9) if numbers else ours == official and type(ours) is type(official)


@pytest.mark.parametrize("spec", sorted(RECIPES))
def test_config_follows_the_official_recipe(spec):
  leaves = config_lib.leaves(_load(spec))
  drift = {key: (leaves.get(key, "missing"), want) for key, want in RECIPES[spec].items()
           if key not in leaves or not _same(leaves[key], want)}
  assert not drift, f"{spec} drifts from the official recipe (ar-gen's, official): {drift}"


@pytest.mark.parametrize("spec", sorted(DIFFERENCES))
def test_differences_from_the_official_code_are_documented(spec):
  with open(os.path.join(REPO, "docs", "recipes.md")) as f:
    text = f.read()
  leaves = config_lib.leaves(_load(spec))
  for key, (_, ours) in DIFFERENCES[spec].items():
    assert leaves[key] == ours, (spec, key, leaves[key])
    assert f"`{key}`" in text, f"docs/recipes.md does not explain {spec}'s {key}"


@pytest.mark.parametrize("depth", sorted(VAR_SIZES))
def test_var_configs_have_vars_sizes(depth):
  from ar_gen.models.next_scale import var_size  # pylint: disable=g-import-not-at-top
  config = _load(f"imagenet256_var.py:depth={depth}")
  assert var_size(config.model) == VAR_SIZES[depth]
  assert (config.mesh.data, config.mesh.fsdp) == ((1, -1) if depth >= 24 else (-1, 1))


def test_llamagen_presets_are_llamagens_sizes():
  from ar_gen.models.next_token import PRESETS  # pylint: disable=g-import-not-at-top
  assert PRESETS == LLAMAGEN_SIZES


@pytest.mark.parametrize("arg", ["", ":depth=12", ":depth=16.0", ":runlocal"])
def test_var_config_without_one_of_vars_depths_names_them(arg):
  with pytest.raises(config_lib.ConfigError, match=r"depth=N .*\[16, 20, 24, 30\]"):
    _load("imagenet256_var.py" + arg)


@pytest.mark.parametrize("arg", ["", ":size=H", ":size=b", ":runlocal"])
def test_llamagen_config_without_one_of_its_sizes_names_them(arg):
  with pytest.raises(config_lib.ConfigError, match=r"size=S .*\['B', 'L', 'XL', 'XXL', '3B'\]"):
    _load("imagenet256_llamagen.py" + arg)


def test_vq16_without_lpips_weights_stops_naming_convert_lpips():
  from ar_gen.runs.run import Run  # pylint: disable=g-import-not-at-top
  from ar_gen.train import aot  # pylint: disable=g-import-not-at-top
  config = _load("imagenet256_vq16.py")
  assert Run(config).task is not None  # a frozen VQ-16 (no loss) needs no LPIPS weights
  with pytest.raises(config_lib.ConfigError, match="ar-gen convert-lpips"):
    aot.compile_step(config, aot.topology_devices("local"))


# ------------------------------------------------------------------------------------------ one step each
@pytest.mark.slow  # 100-140 s each on 2 cores; `make test-all`
@pytest.mark.parametrize("name", ["imagenet256_vq16.py", "imagenet256_lfq.py"])
def test_runlocal_step_on_mock_imagenet(name, tmp_path):
  config = config_lib.load_config(os.path.join(CONFIGS, name) + ":runlocal")
  with tfds.testing.mock_data(num_examples=4):
    metrics = trainer.train(config, str(tmp_path))
  logged = metrics_log.read_metrics(str(tmp_path))[-1]
  assert logged["step"] == 1
  assert math.isfinite(metrics["loss"]) and logged["loss"] == metrics["loss"]  # returned = what metrics.jsonl logs
  assert "d_loss" in metrics and metrics["codebook_usage"] > 0


@pytest.mark.slow  # ~2 min on 2 cores; `make test-all`
def test_vq16_cluster_codebook_then_both_ctf_stages_runlocal_on_mock_imagenet(tmp_path):
  from ar_gen.commands import cluster_codebook  # pylint: disable=g-import-not-at-top
  tok, ctf, stage1, stage2 = (str(tmp_path / n) for n in ("vq", "ctf", "stage1", "stage2"))
  with tfds.testing.mock_data(num_examples=4):
    trainer.train(config_lib.load_config(os.path.join(CONFIGS, "imagenet256_vq16.py:runlocal")), tok)
    cluster_codebook.cluster(tok, 512, ctf, iters=2)
    trainer.train(config_lib.load_config(os.path.join(CONFIGS, f"imagenet256_ctf_stage1.py:size=B,runlocal,"
                                                      f"tokenizer={ctf}")), stage1)
    metrics = trainer.train(config_lib.load_config(os.path.join(CONFIGS, f"imagenet256_ctf.py:runlocal,"
                                                                f"tokenizer={ctf},stage1={stage1}")), stage2)
  assert 0 < metrics["loss"] < math.log(16384)  # masked to a cluster: below the untrained full-vocabulary loss


@pytest.mark.slow  # ~1 min each on 2 cores; `make test-all`
@pytest.mark.parametrize("tokenizer, generator", [("imagenet256_var_tok.py", "imagenet256_var.py:depth=16"),
                                                  ("imagenet256_nfig_tok.py", "imagenet256_nfig.py:"),
                                                  ("imagenet256_vq16.py", "imagenet256_llamagen.py:size=B")])
def test_tokenizer_then_generator_runlocal_on_mock_imagenet(tokenizer, generator, tmp_path):
  tok_dir, gen_dir = str(tmp_path / "tokenizer"), str(tmp_path / "generator")
  with tfds.testing.mock_data(num_examples=4):
    trainer.train(config_lib.load_config(os.path.join(CONFIGS, f"{tokenizer}:runlocal")), tok_dir)
    config = config_lib.load_config(os.path.join(CONFIGS, f"{generator},runlocal,tokenizer={tok_dir}"))
    metrics = trainer.train(config, gen_dir)
  logged = metrics_log.read_metrics(gen_dir)[-1]
  assert logged["step"] == 1 and logged["loss"] == metrics["loss"]  # returned = what metrics.jsonl logs
  # the first step's cross-entropy over the tokenizer's codes is near log(V) of an untrained model, far below 2 log(V)
  tok_model = config_lib.load_workdir_config(tok_dir).model
  codes = tok_model[tok_model.quantizer].codebook_size
  assert 0 < metrics["loss"] < 2 * math.log(codes), (metrics["loss"], codes)


@pytest.mark.slow  # ~3 min on 2 cores; `make test-all`
@pytest.mark.parametrize("variant", ["ar", "maskgit"])
def test_dinov2_fit_kmeans_then_both_digit_stages_runlocal_on_mock_imagenet(variant, tmp_path):
  """The converted (tiny, random) DINOv2 encoder, fit-kmeans over mock ImageNet, stage 1 and the pixel decoder."""
  from ar_gen.commands import extract_tokens, fit_kmeans  # pylint: disable=g-import-not-at-top
  from ar_gen.convert import dinov2  # pylint: disable=g-import-not-at-top
  from tests import golden  # pylint: disable=g-import-not-at-top
  enc, tok, ids, vq, stage1, stage2 = (str(tmp_path / n) for n in ("enc", "tok", "ids", "vq", "stage1", "stage2"))
  dinov2.convert_state_dict(golden.state_dict(golden.load("dinov2_tiny.npz"), "sd"), enc, "fixture.pth",
                            input_size=56, image_size=64, num_heads=3)
  with tfds.testing.mock_data(num_examples=4):
    fit_kmeans.fit(enc, "tfds:imagenet2012:train", 8, tok, examples=4, iters=2)
    extract_tokens.extract(tok, "tfds:imagenet2012:train", ids)
    trainer.train(config_lib.load_config(os.path.join(CONFIGS, "imagenet256_vq16.py:runlocal")), vq)
    trainer.train(config_lib.load_config(os.path.join(CONFIGS, f"imagenet256_digit_stage1.py:runlocal,"
                                                      f"tokenizer={tok}"), (f"data.train=tokens:{ids}",)), stage1)
    metrics = trainer.train(config_lib.load_config(os.path.join(
        CONFIGS, f"imagenet256_digit.py:runlocal,variant={variant},tokenizer={vq},ids={tok},stage1={stage1}")),
        stage2)
  assert 0 < metrics["loss"] < 2 * math.log(16384)
