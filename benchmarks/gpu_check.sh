#!/usr/bin/env bash
# GPU check: build the extension in place with this machine's torch, run the CUDA tests and the GPU
# benchmarks, print a short table last, and write full results into the folder named by the first
# argument (default ./gpu-results).
#
#   bash benchmarks/gpu_check.sh "$OUT"
#
# For a GPU machine with torch, nvcc and ninja but no network and no DALI; well under 10 minutes
# on one H200. Every step runs even if an earlier one failed; the exit status is non-zero if any
# failed. Later issues add their GPU benchmarks here.
set -uo pipefail
OUT="${1:-./gpu-results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
status=0
step() {  # step NAME LOGFILE COMMAND...: run, append to the log, remember failure
  local name="$1" log="$2"; shift 2
  echo "== $name" | tee -a "$OUT/$log"
  local t0=$SECONDS
  if "$@" > >(tee -a "$OUT/$log") 2>&1; then
    echo "$name: ok ($((SECONDS - t0)) s)" >> "$OUT/summary.txt"
  else
    echo "$name: FAILED ($((SECONDS - t0)) s, see $log)" >> "$OUT/summary.txt"
    status=1
  fi
}
# At most 8 files come back from a device run: the GPU description goes into summary.txt.
gpu="$(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1 | head -n1)"
echo "gpu: $gpu ($(date -u +%Y-%m-%d))" > "$OUT/summary.txt"
# Build for the card present (faster than the default list; +PTX keeps newer cards working).
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  cap="$(echo "$gpu" | awk -F', ' '{print $4}')"
  [ -n "$cap" ] && export TORCH_CUDA_ARCH_LIST="${cap}+PTX"
fi
step build build.log "$PY" -m pip install --no-build-isolation --no-deps -e .
# $OUT holds 8 files at most: summary.txt, build.log (with `easyhard info`), tests.log, bench.log
# and the four benchmark JSONs.
"$PY" -m easyhard info >> "$OUT/build.log" 2>&1 || status=1
step cuda-tests tests.log "$PY" -m pytest -q -m cuda -p no:cacheprovider tests
# All benchmark output goes to one log (8 files at most come back from a device run).
step bench-ops bench.log "$PY" benchmarks/bench_ops.py --device cuda --out "$OUT"
# No DALI there: the GPU-resident loader only.
step bench-loader bench.log "$PY" benchmarks/bench_loader.py --device cuda --skip-files --out "$OUT"
step bench-select bench.log "$PY" benchmarks/bench_select.py --device cuda --out "$OUT"
step bench-train bench.log "$PY" benchmarks/bench_train.py --device cuda --gpu-suite --out "$OUT"
# The command users run (its JSON is what they compare across machines)
step easyhard-bench-train bench.log "$PY" -m easyhard bench train --device cuda --arch resnet50 \
  --dataset synthetic --num-samples 2048 --num-classes 1000 --image-size 224 --batch-size 256 \
  --amp bf16 --steps 30 --warmup 5 --json
step easyhard-bench-loader bench.log "$PY" -m easyhard bench loader --device cuda \
  --dataset synthetic --num-samples 50000 --num-classes 10 --image-size 32 --batch-size 512 --quiet

echo
echo "== summary"
cat "$OUT/summary.txt"
grep -E "^cuda( |:)|^tensor-cuda|^recording|224px|CIFAR-shaped|images/s|overhead" "$OUT/bench.log" 2>/dev/null || true
exit $status
