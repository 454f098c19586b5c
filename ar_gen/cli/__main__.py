"""`python -m ar_gen.cli`: the `ar-gen` command (what the demo and the launchers start)."""

import sys

from ar_gen.cli import main

if __name__ == "__main__":
  sys.exit(main())
