"""The tokenizer training task: reconstruction + quantizer losses, optional MS-SSIM, LPIPS and PatchGAN terms.

Loss = rec_weight * L1|L2 + ms_ssim_weight * (1 - MS-SSIM) + lpips_weight * LPIPS + quantizer loss
       + [step >= disc_start] * (adaptive_weight * disc_weight * hinge G loss + hinge D loss).
LPIPS is on when lpips_weight > 0, and then needs the converted weights `lpips_path` (`ar-gen convert-lpips`): a
missing file is an error, never a silently dropped term. Generator and discriminator are trained by one backward
pass: the G term sees the discriminator's parameters through stop_gradient and the D term sees the reconstruction
through stop_gradient, so each part's gradient is exactly its own loss's. The adaptive weight is VQGAN's ratio of
gradient norms at the decoder's output kernel (`disc_adaptive_weight`; 1 when off, as in LlamaGen).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ar_gen.config import ConfigError
from tokenizers import kl, losses, lpips
from tokenizers.discriminator import PatchDiscriminator
from tokenizers.model import Tokenizer, build_tokenizer, dtype

REC_LOSSES = {"l1": losses.l1, "l2": losses.l2}


class TokenizerWithDiscriminator(nnx.Module):
  """What the tokenizer task trains: the tokenizer and, if configured, its discriminator."""

  def __init__(self, tokenizer: Tokenizer, discriminator: PatchDiscriminator | None):
    self.tokenizer, self.discriminator = tokenizer, discriminator


def _apply_conv(conv: nnx.Conv, features: jax.Array, kernel: jax.Array) -> jax.Array:
  out = jax.lax.conv_general_dilated(features, kernel.astype(features.dtype), (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return out + conv.bias[...].astype(out.dtype)


def perplexity(hist_K: np.ndarray) -> float:
  p = hist_K / max(hist_K.sum(), 1)
  return float(np.exp(-np.sum(p * np.log(np.where(p > 0, p, 1.0)))))


def check_lpips(lc: ml_collections.ConfigDict) -> str:
  """The LPIPS weights file of a loss section that names one or weighs LPIPS; a weight without a file, or a file
  with weight 0, is a ConfigError that says the fix."""
  if lc.lpips_weight <= 0:
    raise ConfigError(f"loss.lpips_path={lc.lpips_path!r} is set but loss.lpips_weight={lc.lpips_weight}: pass "
                      "--config.loss.lpips_weight=W (LlamaGen's is 1.0) to add the LPIPS term")
  if not lc.lpips_path:
    raise ConfigError(
        f"loss.lpips_weight={lc.lpips_weight} needs LPIPS weights in loss.lpips_path, and none can be downloaded at "
        "run time: convert torchvision's VGG-16 and the LPIPS package's linear layers once with `ar-gen "
        "convert-lpips vgg16-397923af.pth vgg.pth --out lpips.npz` and pass --config.loss.lpips_path=lpips.npz "
        "(or --config.loss.lpips_weight=0 to train without LPIPS; a run started before ar-gen required LPIPS "
        "weights trained without LPIPS: continue it with --config.loss.lpips_weight=0 --allow-config-change)")
  return lc.lpips_path


class TokenizerTask:
  """Trains a tokenizer of any quantizer (`config.task = 'tokenizer'`); other runs read its `tokenizer`."""

  picture = "recon"
  exports = "tokenizer"

  def __init__(self, config: ml_collections.ConfigDict, frozen: dict[str, Any]):
    self.config, self.frozen = config, frozen
    self.loss_config = config.loss
    if self.loss_config.rec not in REC_LOSSES:
      raise ValueError(f"loss.rec must be one of {sorted(REC_LOSSES)}, got {self.loss_config.rec!r}")
    self._lpips = None  # the LPIPS weights, read on first use (a task constructor does no I/O)

  def build(self, rngs: nnx.Rngs) -> TokenizerWithDiscriminator:
    m, c = self.config.model, self.config.data.channels
    disc = None
    if self.loss_config.disc_weight > 0:
      disc = PatchDiscriminator(c, self.loss_config.disc_channels, self.loss_config.disc_layers, rngs=rngs,
                                dtype=dtype(m.dtype), param_dtype=dtype(m.param_dtype))
    return TokenizerWithDiscriminator(build_tokenizer(m, c, self.config.data.image_size, rngs), disc)

  def export(self, model: TokenizerWithDiscriminator) -> Tokenizer:
    return model.tokenizer

  def check_source(self, source: Any) -> None:
    """Any image dataset will do (a tokenizer ignores labels); the LPIPS weights the loss needs are read now, so
    a missing or bad file fails before the work directory is written or a step runs."""
    del source
    self._load_lpips()

  def _load_lpips(self):
    lc = self.loss_config
    if (lc.lpips_weight > 0 or lc.lpips_path) and self._lpips is None:
      self._lpips = lpips.load_weights(check_lpips(lc))
    return self._lpips

  def prepare(self, batch: dict[str, jax.Array], frozen: Any) -> dict[str, jax.Array]:
    del frozen
    return batch

  def _nll(self, x: jax.Array, x_rec: jax.Array) -> jax.Array:
    lc = self.loss_config
    nll = lc.rec_weight * REC_LOSSES[lc.rec](x_rec.astype(jnp.float32), x)
    if lc.ms_ssim_weight > 0:
      nll = nll + lc.ms_ssim_weight * (1.0 - jnp.mean(losses.ms_ssim(x_rec, x)))
    if lc.lpips_weight > 0 or lc.lpips_path:
      nll = nll + lc.lpips_weight * jnp.mean(lpips.distance(self._load_lpips(), x_rec, x))
    return nll

  def loss(self, model: TokenizerWithDiscriminator, batch: dict, rng: jax.Array, step: jax.Array, frozen: Any):
    del frozen
    lc, x = self.loss_config, batch["image"].astype(jnp.float32)
    x_rec, aux = model.tokenizer(x, train=True, rng=rng)
    nll = self._nll(x, x_rec)
    loss = nll + aux["quant_loss"]
    metrics = {"rec_loss": nll, "quant_loss": aux["quant_loss"], "psnr": jnp.mean(losses.psnr(x_rec, x))}
    for key in ("code_hist", "commit_loss", "codebook_loss", "entropy_loss", "sample_entropy", "batch_entropy",
                "kl_loss", "posterior_std"):
      if key in aux:
        metrics[key] = aux[key]
    if model.discriminator is not None:
      disc = model.discriminator
      graphdef, disc_state = nnx.split(disc)
      frozen = nnx.merge(graphdef, jax.lax.stop_gradient(disc_state))
      conv_out, feats = model.tokenizer.decoder.conv_out, aux["decoder_features"]
      kernel = conv_out.kernel[...]
      g_of = lambda k: losses.hinge_g_loss(frozen(_apply_conv(conv_out, feats, k)))
      nll_of = lambda k: self._nll(x, _apply_conv(conv_out, feats, k))
      weight = (losses.adaptive_weight(jax.grad(nll_of)(kernel), jax.grad(g_of)(kernel))
                if lc.disc_adaptive_weight else jnp.float32(1.0))
      g_loss = losses.hinge_g_loss(frozen(x_rec))
      d_loss = losses.hinge_d_loss(disc(x), disc(jax.lax.stop_gradient(x_rec)))
      on = (step >= lc.disc_start).astype(jnp.float32)
      loss = loss + on * (weight * lc.disc_weight * g_loss + d_loss)
      metrics.update(g_loss=g_loss, d_loss=d_loss, adaptive_weight=weight)
    return loss, metrics, aux["z"]

  def post_update(self, model: TokenizerWithDiscriminator, z: jax.Array, rng: jax.Array,
                  step: jax.Array) -> dict[str, jax.Array]:
    q_config = self.config.model[self.config.model.quantizer]
    every = q_config.get("restart_every_steps", 0)
    quantizer = model.tokenizer.quantizer
    if isinstance(quantizer, kl.KLBottleneck):  # the latent scale follows the posterior means' moments
      quantizer.update_stats(z)
      return {"latent_scale": quantizer.scale()}
    if not every:
      return {}
    threshold = jnp.where((step + 1) % every == 0, q_config.restart_threshold, 0.0)
    return {"restarted_codes": quantizer.restart_dead_codes(z, rng, threshold).astype(jnp.float32)}

  def summarize(self, window: dict[str, np.ndarray]) -> dict[str, float]:
    if "code_hist" not in window:  # a KL bottleneck has no codes
      return {}
    hist = window["code_hist"]
    return {"codebook_usage": float(np.mean(hist > 0)), "perplexity": perplexity(hist)}

  def visualize(self, model: TokenizerWithDiscriminator, batch: dict[str, jax.Array], frozen: Any) -> jax.Array:
    """Originals (top row) over reconstructions (bottom row)."""
    del frozen
    x = batch["image"]
    return jnp.stack([x, model.tokenizer.decode(model.tokenizer.encode(x)).astype(x.dtype)])
