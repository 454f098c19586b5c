"""The one training loop for every task (tokenizers, AR families, the classifier), AOT compilation, preemption and
metric logging; the run state it trains lives in `ar_gen/runs`."""
