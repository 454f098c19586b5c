"""Feature extraction sharded over 4 (fake CPU) devices gives the features of one device."""

import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import sys
import numpy as np
from ar_gen.eval import features as features_lib
import jax, jax.numpy as jnp

def fn(params, images):
  x = images.astype(jnp.float32).reshape(images.shape[0], -1)
  h = jnp.tanh(x @ params["w"])
  return h, h @ params["v"]

rng = np.random.default_rng(0)
params = {"w": jnp.asarray(rng.standard_normal((48, 16)) * 0.05, jnp.float32),
          "v": jnp.asarray(rng.standard_normal((16, 5)), jnp.float32)}
extractor = features_lib.Extractor("test", fn, params, None, channels=3)
images = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(10)]
images += [rng.integers(0, 256, (2, 8, 3), dtype=np.uint8) for _ in range(5)]
features, logits = features_lib.extract(extractor, images, batch_size=6, desc="test")
np.savez(sys.argv[1], features=features, logits=logits, devices=jax.device_count())
"""


def _run(tmp_path, devices):
  out = tmp_path / f"out{devices}.npz"
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True, env=env, capture_output=True)
  return np.load(out)


def test_sharded_extraction_equals_one_device(tmp_path):
  one, four = _run(tmp_path, 1), _run(tmp_path, 4)
  assert int(one["devices"]) == 1 and int(four["devices"]) == 4
  assert one["features"].shape == (15, 16)
  np.testing.assert_allclose(four["features"], one["features"], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(four["logits"], one["logits"], rtol=1e-6, atol=1e-6)
