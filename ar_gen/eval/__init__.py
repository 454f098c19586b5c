"""Evaluation: tokenizer reconstruction quality, FID / IS / precision-recall (Inception or classifier features),
sharded generation of a run's samples, and the in-training evaluators of `config.evals`."""
