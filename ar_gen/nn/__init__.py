"""Shared NNX building blocks of the AR models: attention over group ids, norms, MLPs, RoPE, transformer blocks."""
