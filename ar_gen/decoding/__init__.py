"""Decoding: the one sampler driver (`driver.py`), its heads, and logits processors (temperature, top-k, top-p, guidance)."""
