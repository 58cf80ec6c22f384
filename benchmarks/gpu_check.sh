#!/usr/bin/env bash
# The GPU check of issue 13 Part B, on one GPU in at most 8 minutes, downloading nothing:
#   1. pytest -m gpu              AMP step, GPU->CPU checkpoint, fp32 vs AMP evaluation,
#                                 `raypose train --local`, a one-trial search on one GPU worker
#   2. bench_train.py --gpu       reference loop fp32/--amp vs raypose's loop and its levers, batch 2
#                                 and the largest that fits; `raypose train --local` vs Ray Train
#   3. bench_infer.py --gpu       inference images/s (fp32, amp) and evaluation time
# Results (logs, JSON, markdown, junit XML) go to ${OUT:-benchmarks/out}; summary.md collects them.
# Each stage has its own time limit and a failing stage does not stop the next; the exit status is
# non-zero when any stage failed.
#
#   bash benchmarks/gpu_check.sh                 # from anywhere; runs in the repository root
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out}"
mkdir -p "$OUT"
export RAYPOSE_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 MPLBACKEND=Agg
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA GPU (torch.cuda.is_available() is False); nothing to check" >&2
    exit 2
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PYTHON" -c 'import torch, torchvision, ray; print(torch.__version__, torchvision.__version__, ray.__version__, torch.cuda.get_device_name())' \
    > "$OUT/versions.txt"

start_all=$(date +%s)
failed=0
{
    echo "# GPU check: $(cat "$OUT/versions.txt")"
    echo
    echo "| stage | exit | seconds | log |"
    echo "|---|---|---|---|"
} > "$OUT/summary.md"

# stage NAME LIMIT_S COMMAND...: run with a time limit (SIGINT, then SIGKILL 15 s later), log to OUT.
stage() {
    local name=$1 limit=$2 rc=0 start
    shift 2
    start=$(date +%s)
    echo "== $name (limit ${limit} s)"
    timeout --signal=INT --kill-after=15 "$limit" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
    echo "| $name | $rc | $(( $(date +%s) - start )) | $name.log |" >> "$OUT/summary.md"
    if [ "$rc" -ne 0 ]; then
        failed=1
        echo "   failed ($rc); last lines of $OUT/$name.log:"
        tail -n 20 "$OUT/$name.log" | sed 's/^/   /'
    fi
}

# Limits add up to 440 s (+ 15 s each to die): the whole script stays under 8 minutes.
stage pytest_gpu 170 "$PYTHON" -m pytest -m gpu tests/test_gpu.py -v -rs -s -p no:cacheprovider \
    --junitxml "$OUT/pytest_gpu.xml"
stage bench_train 210 "$PYTHON" benchmarks/bench_train.py --gpu --out "$OUT" --budget-s 180
stage bench_infer 60 "$PYTHON" benchmarks/bench_infer.py --gpu --out "$OUT"

for part in bench_train.md bench_infer.md; do
    if [ -f "$OUT/$part" ]; then
        { echo; cat "$OUT/$part"; } >> "$OUT/summary.md"
    fi
done
echo >> "$OUT/summary.md"
echo "Total: $(( $(date +%s) - start_all )) s" >> "$OUT/summary.md"
cat "$OUT/summary.md"
exit "$failed"
