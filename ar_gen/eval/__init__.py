"""Evaluation: tokenizer reconstruction quality (and, later, FID / IS / precision-recall)."""
