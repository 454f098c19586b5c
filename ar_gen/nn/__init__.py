"""Shared NNX building blocks. Weights name their logical axes (`logical()`); the trainer places them on the mesh
(ar_gen/runs/sharding.py), so Flax's eager variable sharding is switched off here."""

from flax import config as _flax_config

_flax_config.update("flax_always_shard_variable", False)
