"""`ar-gen spectrum`: power per band and the radial profile land where known signals put them."""

import json

import numpy as np
import pytest

from ar_gen import cli
from ar_gen.eval import spectrum


def _cosine(side, u, v, amplitude=0.4):
  y, x = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
  return 0.5 + amplitude * np.cos(2 * np.pi * (u * y + v * x) / side)


@pytest.mark.parametrize("u, v, band", [(2, 1, "low"), (0, 8, "mid"), (12, 0, "high"), (12, 12, "high")])
def test_a_cosine_puts_all_its_power_in_its_band_and_ring(u, v, band):
  side = 32  # rho of (u, v) = |(u, v)| / 16: (2, 1) 0.14, (0, 8) 0.5, (12, 0) 0.75, corner (12, 12) 1.06
  image = _cosine(side, u, v)[None, :, :, None]
  result = spectrum.summarize(image)
  assert result[band] == pytest.approx(1.0, abs=1e-9), result
  assert result["power"] == pytest.approx(0.4 ** 2 / 2, rel=1e-9)  # Parseval: the pixel variance of the cosine
  profile = np.asarray(result["profile"])
  assert int(np.argmax(profile)) == round(np.hypot(u, v))


def test_white_noise_spreads_power_as_the_bins_do_and_rgb_uses_luma():
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, (200, 32, 32, 1)).astype(np.uint8)
  rho = spectrum.normalized_radius(32, 32)
  bins = rho.size - 1  # without DC
  expected = {"low": ((rho > 0) & (rho <= 1 / 3)).sum() / bins, "high": (rho > 2 / 3).sum() / bins}
  result = spectrum.summarize(noise)
  for band, share in expected.items():
    assert result[band] == pytest.approx(share, abs=0.01), (band, result)
  assert result["low"] + result["mid"] + result["high"] == pytest.approx(1.0)
  gray = _cosine(16, 3, 0)[None]
  rgb = np.stack([gray, gray, gray], -1)
  assert spectrum.summarize(rgb)["power"] == pytest.approx(spectrum.summarize(gray[..., None])["power"])


def test_cli_writes_one_row_per_set_and_names_bad_input(tmp_path, capsys):
  smooth = (np.stack([_cosine(16, 1, 0)] * 4)[..., None] * 255).astype(np.uint8)
  sharp = (np.stack([_cosine(16, 7, 0)] * 4)[..., None] * 255).astype(np.uint8)
  np.savez(tmp_path / "smooth.npz", smooth)
  np.savez(tmp_path / "sharp.npz", sharp)
  out = tmp_path / "spectrum.json"
  assert cli.main(["spectrum", str(tmp_path / "smooth.npz"), str(tmp_path / "sharp.npz"), "--out", str(out)]) == 0
  rows = json.load(open(out))["results"]
  assert [r["count"] for r in rows] == [4, 4]
  assert rows[0]["low"] > 0.99 and rows[1]["high"] > 0.99
  assert cli.main(["spectrum", str(tmp_path / "smooth.npz"), "--out", str(out)]) != 0  # no silent overwrite
  assert "exists" in capsys.readouterr().err
  assert cli.main(["spectrum", str(tmp_path / "smooth.npz"), "--edges", "0.5"]) != 0
  assert "--edges" in capsys.readouterr().err
  np.savez(tmp_path / "stats.npz", mu=np.zeros(4), sigma=np.eye(4))
  assert cli.main(["spectrum", str(tmp_path / "stats.npz")]) != 0
  assert "holds no images" in capsys.readouterr().err
  assert cli.main(["spectrum", str(tmp_path / "missing.npz")]) != 0
  assert "missing.npz" in capsys.readouterr().err
