"""ar-gen: autoregressive image generation in JAX.

Importing this package checks that the top-level `tokenizers` package is ar-gen's own and not HuggingFace's
wheel of the same import name (see `check_tokenizers_package`).
"""

import importlib
import sys

__version__ = "0.1.0"

_CLASH_MESSAGE = (
    "The `tokenizers` package imported from {origin} is not ar-gen's: it is most likely HuggingFace's "
    "`tokenizers` wheel, which uses the same import name. Install ar-gen in its own virtual environment "
    "(`make demo` or `make test` create .venv), or `pip uninstall tokenizers` in this one."
)


def check_tokenizers_package(module=None):
  """Returns ar-gen's `tokenizers` package; raises ImportError naming the clash if another one is importable."""
  if module is None:
    module = sys.modules.get("tokenizers") or importlib.import_module("tokenizers")
  if not getattr(module, "IS_AR_GEN_TOKENIZERS", False):
    raise ImportError(_CLASH_MESSAGE.format(origin=getattr(module, "__file__", "<unknown>")))
  return module


check_tokenizers_package()
