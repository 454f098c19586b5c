"""Decoding: logits processors (temperature, top-k, top-p, classifier-free guidance) and the sampler loop."""
