"""PatchGAN discriminator (pix2pix / taming-transformers layout) with GroupNorm instead of BatchNorm.

GroupNorm keeps the step a pure function (no batch statistics to carry); the logits are one per patch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tokenizers.nets import norm


class PatchDiscriminator(nnx.Module):
  """Images [B, H, W, C] -> patch logits [B, h, w, 1]."""

  def __init__(self, in_channels: int, channels: int = 64, num_layers: int = 3, *, rngs: nnx.Rngs,
               dtype=jnp.float32, param_dtype=jnp.float32):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    convs, norms, cin = [], [], in_channels
    for i in range(num_layers + 1):
      cout = channels * min(2 ** i, 8)
      stride = 2 if i < num_layers else 1
      convs.append(nnx.Conv(cin, cout, (4, 4), strides=(stride, stride), padding="SAME", **kw))
      norms.append(norm(cout, rngs, dtype, param_dtype) if i > 0 else None)
      cin = cout
    self.convs, self.norms = nnx.List(convs), nnx.List(norms)
    self.out = nnx.Conv(cin, 1, (4, 4), padding="SAME", **kw)

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    h = x_BHWC
    for conv, gn in zip(self.convs, self.norms):
      h = conv(h)
      h = nnx.leaky_relu(gn(h) if gn is not None else h, 0.2)
    return self.out(h)
