"""What the rest of ar-gen needs from a tokenizer and its quantizer: Protocols, no concrete classes.

A tokenizer (`Tokenizer`) maps images to one token sequence per image and back, and says its `layout`
(`ar_gen/layout.py`): the token maps, the AR steps and the token kind. Discrete (VQ, LFQ, multi-scale), composed
(a VQ followed by a codeword -> cluster table; a frozen encoder plus k-means centroids) and continuous (KL-VAE)
tokenizers all satisfy it; a decode-less tokenizer raises in `decode`.

Every quantizer (`Quantizer`) takes the same call: `quantizer(z, train, rng) -> (z_q, tokens, aux)`, where `aux`
holds `quant_loss`, `code_hist` and `z` at least. Residual quantizers (`ResidualQuantizer`: multi-scale now,
frequency bands next) also say how the decoder's input is accumulated group by group, which is what next-scale
teacher forcing and sampling need.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax

from ar_gen.layout import TokenLayout


@runtime_checkable
class Tokenizer(Protocol):
  """Images <-> token sequences of a layout."""

  codebook_size: int  # the vocabulary of a layout of ids (0 for vectors)

  @property
  def layout(self) -> TokenLayout:
    """The token layout of one image."""

  def encode(self, images_BHWC: jax.Array) -> jax.Array:
    """Tokens [B, L] (ids) or [B, L, D] (vectors) of images in [-1, 1]."""

  def decode(self, tokens: jax.Array, num_maps: int | None = None) -> jax.Array:
    """Images [B, H, W, C] in about [-1, 1] from tokens (from the first `num_maps` maps when progressive)."""


class QuantizedTokenizer(Tokenizer, Protocol):
  """A tokenizer whose tokens come from one quantizer of its latent (VQ, LFQ, multi-scale): what the next-scale
  family reads (its quantizer must be a `ResidualQuantizer`)."""

  quantizer: "Quantizer"


class Quantizer(Protocol):
  """Latent features [B, h, w, D] -> tokens of `layout`, with the losses of training."""

  code_dim: int
  codebook_size: int

  @property
  def layout(self) -> TokenLayout:
    """The token layout of one latent."""

  def __call__(self, z_BhwD: jax.Array, train: bool = False,
               rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array, dict]:
    """(straight-through z_q, tokens [B, L], aux: quant_loss, code_hist, z, and quantizer-specific losses)."""

  def indices(self, z_BhwD: jax.Array) -> jax.Array:
    """Tokens [B, L] of features."""

  def embed(self, tokens_BL: jax.Array, num_maps: int | None = None) -> jax.Array:
    """The decoder's input [B, h, w, D] from tokens (the first `num_maps` maps)."""

  def restart_dead_codes(self, z_BhwD: jax.Array, rng: jax.Array, threshold: float) -> jax.Array:
    """Replaces rarely used codes (a no-op returning 0 where there is no codebook); returns the count."""


class ResidualQuantizer(Quantizer, Protocol):
  """A quantizer whose decoder input is a sum over groups (multi-scale, frequency bands)."""

  def initial_features(self, batch: int) -> jax.Array:
    """The accumulated features before any group, [B, h, w, D]."""

  def accumulate(self, f_hat_BhwD: jax.Array, group: int, tokens_Bl: jax.Array) -> jax.Array:
    """The accumulated features after adding group `group`'s tokens [B, l]."""

  def next_inputs(self, f_hat_BhwD: jax.Array, group: int) -> jax.Array:
    """The AR model's inputs of group `group` > 0, [B, l, D], from the features accumulated before it."""

  def teacher_inputs(self, tokens_BL: jax.Array) -> jax.Array:
    """The inputs of groups 1 .. K-1 at once, [B, L - l_0, D] (teacher forcing)."""
