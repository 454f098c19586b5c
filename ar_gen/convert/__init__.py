"""Readers of released checkpoints into ar-gen work directories: LlamaGen (VQ + GPT), VAR (VQVAE + VAR-d*)."""
