"""`ar-gen bench sample|attention|fid` run end to end on small sizes and refuse bad arguments by name."""

import json

import pytest

from ar_gen import cli


@pytest.mark.slow
def test_bench_sample_tiny(tmp_path, capsys):
  out = tmp_path / "bench.json"
  assert cli.main(["bench", "sample", "--size", "tiny", "--tokens", "16", "--vocab-size", "32", "--num-classes", "4",
                   "--batch-sizes", "1,2", "--positions", "2,14", "--min-seconds", "0", "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "cached/uncached" in printed and "step@14/step@2" in printed and "next_scale img/s (4 steps)" in printed
  assert "mar img/s (16 steps)" in printed and "mar_raster img/s (16 steps)" in printed
  result = json.load(open(out))
  assert [r["batch"] for r in result["rows"]] == [1, 2] and result["num_tokens"] == 16
  assert result["scales"] == [1, 2, 3, 4]  # VAR's schedule up to the 4 x 4 grid
  for row in result["rows"]:
    assert row["cached_tokens_per_s"] > 0 and row["uncached_tokens_per_s"] > 0 and row["step_ratio"] > 0
    assert row["next_scale_images_per_s"] > 0
    ratio = row["next_scale_images_per_s"] / row["next_token_images_per_s"]
    assert row["next_scale_vs_next_token"] == pytest.approx(ratio)


@pytest.mark.parametrize("args, message", [
    (["--size", "Q"], "--size must be one of"),
    (["--tokens", "250"], "must be a square"),
    (["--tokens", "16", "--positions", "2,16"], "--positions must lie in"),
    (["--positions", "16"], "two positions"),
    (["--tokens", "16", "--positions", "2,14", "--scales", "1,2"], "--scales must end at the grid's side 4"),
])
def test_bench_sample_refuses_bad_arguments(args, message, capsys):
  assert cli.main(["bench", "sample", *args]) == 2
  assert message in capsys.readouterr().err


@pytest.mark.slow  # ~50 s on 2 cores; `make test-all`
def test_bench_fid_without_pytorch_fid_reports_ar_gen_alone(tmp_path, capsys):
  out = tmp_path / "fid.json"
  assert cli.main(["bench", "fid", "--num-images", "2", "--batch-size", "2", "--image-size", "32",
                   "--torch-python", "/bin/false", "--out", str(out)]) == 0
  result = json.load(open(out))
  assert result["ar_gen"] > 0 and result["pytorch_fid"] is None and result["ratio"] is None
  assert "pytorch-fid did not run with /bin/false" in capsys.readouterr().out


def test_bench_fid_refuses_a_partial_batch():
  assert cli.main(["bench", "fid", "--num-images", "3", "--batch-size", "2"]) == 2


@pytest.mark.slow
def test_bench_attention_small_shapes(tmp_path, capsys):
  out = tmp_path / "attention.json"
  assert cli.main(["bench", "attention", "--shapes", "1x2x680x64", "--decode-lengths", "300", "--impls",
                   "xla", "--min-seconds", "0", "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "kernel vs reference (interpret mode)" in printed and "TFLOP/s" in printed and "KV GB/s" in printed
  result = json.load(open(out))
  assert max(result["kernel_check"].values()) < 1e-4
  assert result["skipped_blocks"]["block-causal L=680"] == pytest.approx(8 / 36)
  assert {(r["layout"], r["pass"]) for r in result["attention"]} == {
      (layout, p) for layout in ("causal", "block-causal") for p in ("fwd", "fwd+bwd")}
  assert all(r["ms"] > 0 and r["tflops"] > 0 and r["vs_xla"] == 1.0 for r in result["attention"])
  assert [r["cache"] for r in result["decode"]] == [300]


@pytest.mark.parametrize("args, message", [
    (["--shapes", "8x16x680"], "BxHxLxD"),
    (["--decode-lengths", "2a6"], "--decode-lengths takes"),
    (["--impls", "xla,triton"], "'triton' is not one of"),
])
def test_bench_attention_refuses_bad_arguments(args, message, capsys):
  assert cli.main(["bench", "attention", "--no-check", *args]) == 2
  assert message in capsys.readouterr().err


def test_bench_roofline_measures_both_limits(tmp_path, capsys):
  out = tmp_path / "roofline.json"
  assert cli.main(["bench", "roofline", "--min-seconds", "0", "--read-mib", "16", "--out", str(out)]) == 0
  result = json.load(open(out))
  assert result["matmul_flops_per_s"] > 1e8 and result["read_bytes_per_s"] > 1e8
  assert "GFLOP/s" in capsys.readouterr().out


def test_limit_of_a_workload_is_the_slower_of_arithmetic_and_reads_per_step():
  from ar_gen.bench import limits, roofline
  from ar_gen.layout import TokenLayout
  roof = roofline.Roofline(matmul_flops_per_s=100.0, read_bytes_per_s=10.0, device="test")

  class Steps:  # two maps of 1 and 4 tokens
    layout = TokenLayout.square_maps((1, 2), 4)

  # step 1: 100 * 1/5 flops (0.2 s) or 10 + 50 * 1/5 bytes (2 s); step 2: 80 flops (0.8 s) or 10 + 50 bytes (6 s);
  # the decode's 200 flops (2 s)
  got = limits.limit_seconds(roof, Steps(), token_flops=100.0, weights=10, cache=50, decode_flops=200.0)
  assert got == pytest.approx(2.0 + 6.0 + 2.0)
  fast_reads = roofline.Roofline(matmul_flops_per_s=100.0, read_bytes_per_s=1e6, device="test")
  assert limits.limit_seconds(fast_reads, Steps(), 100.0, 10, 50) == pytest.approx(0.2 + 0.8)


@pytest.mark.slow
def test_gpu_bench_script_runs_at_tiny_sizes(tmp_path):
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "AR_GEN": f"{sys.executable} -m ar_gen.cli"}
  proc = subprocess.run(["bash", os.path.join(root, "docs", "gpu_bench.sh"), str(tmp_path / "out"), "--tiny"],
                        capture_output=True, text=True, env=env, cwd=root, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for name in ("roofline", "sample", "attention", "fid"):
    assert json.load(open(tmp_path / "out" / f"{name}.json"))
  sample = json.load(open(tmp_path / "out" / "sample.json"))
  assert {(r["workload"], r["guidance"] is None) for r in sample["as_users_sample"]} == {
      (f, g) for f in ("next_token", "next_scale", "mar", "mar_raster") for g in (True, False)}
  for r in sample["as_users_sample"]:  # a diffusion head's inner loop hides its flops from XLA: no limit there
    assert (r["fraction_of_limit"] is None) == r["workload"].startswith("mar") and r["images_per_s"] > 0
    assert r["fraction_of_limit"] is None or r["fraction_of_limit"] > 0
    assert r["diffusion_steps"] == (100 if r["workload"].startswith("mar") else None)
