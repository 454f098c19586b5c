"""The library side of `ar-gen` subcommands that write files (sample, extract-tokens); `ar_gen.cli` parses."""
