"""The NNX models of the AR families, one file each, over the shared blocks of `ar_gen.nn`; their tasks and
sampler step contracts are in `ar_gen/families`."""
