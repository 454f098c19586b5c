"""Golden fixtures of official implementations (numbers only, under tests/fixtures/): loading and state dicts."""

import os

import numpy as np

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def load(name: str) -> dict[str, np.ndarray]:
  """Every array of tests/fixtures/NAME.npz."""
  with np.load(os.path.join(FIXTURES, name)) as f:
    return {k: f[k] for k in f.files}


def state_dict(fixture: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """The arrays stored as PREFIX/NAME, as a PyTorch-style state dict {NAME: array}."""
  return {k[len(prefix) + 1:]: v for k, v in fixture.items() if k.startswith(prefix + "/")}
