"""The FID Inception and statistics against pytorch-fid: a golden fixture made by running pytorch-fid (CPU torch)
on the deterministic random weights and images of `tests/inception_random.py`; plus the weight files' errors."""

import os

import jax
import numpy as np
import pytest

from ar_gen.eval import fid_stats, inception_weights
from tests.inception_random import IMAGE_SIZES, random_features, random_images, random_state_dict

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "inception_fid_random.npz")


@pytest.fixture(scope="module")
def golden():
  with np.load(FIXTURE) as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def model():
  return inception_weights.from_torch(random_state_dict(0))


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
  return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_pool3_and_logits_match_pytorch_fid(model, golden, size):
  pool3, logits = jax.jit(lambda x: model(x))(random_images(1)[size])
  name = f"{size[0]}x{size[1]}"
  assert _relative_error(np.asarray(pool3), golden[f"pool3_{name}"]) <= 1e-4
  assert _relative_error(np.asarray(logits), golden[f"logits_{name}"]) <= 1e-4
  np.testing.assert_allclose(np.asarray(pool3), golden[f"pool3_{name}"], rtol=1e-4, atol=1e-5)


def test_batch_norm_folded_at_load_matches_pytorch_fid_and_the_unfolded_network(model, golden):
  folded = inception_weights.from_torch(random_state_dict(0)).fold_batch_norm()
  assert all(m.bn is None for _, m in folded.iter_modules() if hasattr(m, "bn"))
  images = random_images(1)[(299, 299)]
  pool3, logits = jax.jit(lambda x: folded(x))(images)
  assert _relative_error(np.asarray(pool3), golden["pool3_299x299"]) <= 1e-4
  assert _relative_error(np.asarray(logits), golden["logits_299x299"]) <= 1e-4
  np.testing.assert_allclose(np.asarray(pool3), np.asarray(jax.jit(lambda x: model(x))(images)[0]),
                             rtol=1e-5, atol=1e-6)


def test_image_by_image_on_cpu_gives_the_batch_path_s_features(model):
  images = random_images(1)[(64, 64)]  # a batch of 2: the stem and Mixed_6a run image by image on CPU
  batched = np.asarray(jax.jit(lambda x: model(x))(images)[0])
  singles = np.concatenate([np.asarray(jax.jit(lambda x: model(x))(images[i:i + 1])[0]) for i in range(2)])
  np.testing.assert_allclose(batched, singles, rtol=1e-5, atol=1e-6)  # batch 2 vs 1 may sum in another order


@pytest.mark.parametrize("name, n, dim", [("regular", 500, 16), ("singular", 40, 64)])
def test_frechet_distance_matches_pytorch_fid(golden, name, n, dim):
  a = fid_stats.statistics(random_features(2, n, dim))
  b = fid_stats.statistics(random_features(3, n, dim))
  assert abs(fid_stats.frechet_distance(a, b) - golden[f"fid_{name}"]) <= 1e-6 * max(1.0, golden[f"fid_{name}"])


def test_frechet_distance_of_identical_statistics_is_zero():
  a = fid_stats.statistics(random_features(2, 500, 16))
  assert abs(fid_stats.frechet_distance(a, a)) < 1e-6


def test_statistics_refuse_too_few_samples_and_nan():
  with pytest.raises(ValueError, match="at least 2 samples"):
    fid_stats.statistics(np.zeros((1, 8)))
  features = random_features(2, 10, 4)
  features[3, 1] = np.nan
  with pytest.raises(ValueError, match="1 of 10 feature rows hold NaN"):
    fid_stats.statistics(features)


def test_wrong_weights_are_named():
  state_dict = random_state_dict(0)
  del state_dict["Mixed_6b.branch7x7_2.conv.weight"]
  state_dict["Mixed_9z.conv.weight"] = np.zeros(1, np.float32)
  with pytest.raises(ValueError, match=r"missing \['Mixed_6b.branch7x7_2.conv.weight'\].*Mixed_9z"):
    inception_weights.from_torch(state_dict)
  state_dict = random_state_dict(0)
  state_dict["fc.weight"] = state_dict["fc.weight"][:10]
  with pytest.raises(ValueError, match=r"fc.weight: shape \(10, 2048\).*\(1008, 2048\)"):
    inception_weights.from_torch(state_dict)


def test_missing_weights_say_where_and_how(tmp_path, monkeypatch):
  monkeypatch.delenv(inception_weights.ENV_VAR, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth.*ar-gen convert-inception"):
    inception_weights.find()
  file = tmp_path / "weights.npz"
  file.write_bytes(b"not an npz")
  monkeypatch.setenv(inception_weights.ENV_VAR, str(file))
  assert inception_weights.find() == str(file)
  with pytest.raises(ValueError, match="weights.npz: not a readable .npz"):
    inception_weights.load()


def test_convert_inception_writes_weights_that_load(tmp_path, monkeypatch):
  """The .pth -> .npz step with a stand-in for the .pth reader (torch is not a dependency of the test suite)."""
  with pytest.raises(FileNotFoundError, match="missing.pth: no such file.*pytorch-fid"):
    inception_weights.convert(str(tmp_path / "missing.pth"), str(tmp_path / "x.npz"))
  state_dict = dict(random_state_dict(0), **{"Conv2d_1a_3x3.bn.num_batches_tracked": np.asarray(0)})
  monkeypatch.setattr(inception_weights.torch_files, "load_state_dict", lambda path, expected: state_dict)
  result = inception_weights.convert(str(tmp_path / inception_weights.PTH_NAME), str(tmp_path / "out" / "i.npz"))
  assert result["arrays"] == 472 and result["parameters"] == 23885392
  model = inception_weights.load(str(tmp_path / "out" / "i.npz"))
  np.testing.assert_array_equal(np.asarray(model.fc.kernel.value), random_state_dict(0)["fc.weight"].T)
