"""Decoding: the one sampler driver (`driver.py`), its heads, and the logits processors (temperature, top-k, top-p,
classifier-free guidance)."""
