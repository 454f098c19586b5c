"""Readers of released checkpoints (LlamaGen; later VAR and pytorch-fid Inception) into ar-gen models."""
