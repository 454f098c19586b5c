#!/usr/bin/env bash
# One accelerator's figures for docs/benchmarks.md, as one script: the roofline, sampling as users sample (both
# families, guidance off and on, VAR-d16 + decode), the attention kernels against XLA and cuDNN (causal 4k and
# block-causal L = 680, forward and forward + backward; decode), FID Inception features, and memory (each
# sampling row's compiled memory; the attention run's device peak). JSON results go to OUT_DIR.
#
#   bash docs/gpu_bench.sh OUT_DIR            # the full sizes (about 10 minutes on one H200; more on a CPU)
#   bash docs/gpu_bench.sh OUT_DIR --tiny     # tiny sizes: checks the script itself in a minute (tests do this)
#
# AR_GEN is the command to run (default `ar-gen`; e.g. AR_GEN="python -m ar_gen.cli" on a machine where the
# package is on PYTHONPATH but not installed).
set -euo pipefail
out=${1:?usage: bash docs/gpu_bench.sh OUT_DIR [--tiny]}
mkdir -p "$out"
read -r -a run <<< "${AR_GEN:-ar-gen}"
if [[ "${2:-}" == "--tiny" ]]; then
  roof=(--min-seconds 0 --read-mib 16)
  sample=(--size tiny --tokens 16 --vocab-size 32 --num-classes 4 --batch-sizes 1 --positions 2,14 --min-seconds 0
          --read-mib 16)
  attn=(--shapes 1x2x256x64 --decode-lengths 300 --impls xla --min-seconds 0)
  fid=(--num-images 2 --batch-size 2 --image-size 32 --torch-python /bin/false)
else
  roof=(--min-seconds 2)
  sample=(--size B --batch-sizes 1,8,64 --var-d16 --min-seconds 2)
  attn=(--shapes 8x16x680x64,4x16x4096x128 --decode-lengths 256,680,4096 --min-seconds 2)
  fid=(--num-images 1024 --batch-size 256 --torch-python /bin/false)  # pytorch-fid is timed on the CPU machine
fi
"${run[@]}" bench roofline "${roof[@]}" --out "$out/roofline.json" | tee "$out/roofline.txt"
"${run[@]}" bench sample "${sample[@]}" --out "$out/sample.json" | tee "$out/sample.txt"
"${run[@]}" bench attention "${attn[@]}" --out "$out/attention.json" | tee "$out/attention.txt"
"${run[@]}" bench fid "${fid[@]}" --out "$out/fid.json" | tee "$out/fid.txt"
echo "gpu_bench: results in $out"
