"""AR model families, one file each, over the shared blocks of `ar_gen.nn`."""
