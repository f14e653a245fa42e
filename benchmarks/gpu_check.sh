#!/usr/bin/env bash
# One check for a lent GPU machine (<= 8 min): ONNX Runtime CUDA vs CPU vs torch eager for both
# presets (benchmarks/gpu_bench.py), then parity on the demo cases, `ricecli classify --device
# cuda` end to end and explain's occlusion vs MONAI on the same GPU (benchmarks/gpu_extra.py).
# Figures go to $OUT (or /tmp/ricenet_gpu_check): gpu_check.json, gpu_extra.json, logs.
#
# Packages the GPU image lacks travel as wheels: either in .whl/ (pip install --target), or as
# a tar split into parts carried one per call while the machine stays warm (the device tool
# carries at most 64 MiB a call, the repo included), joined here:
#   GPU_CHECK_PARTS=/tmp/parts  (part00, part01, ... of a tar holding payload/*.whl)
# GPU_CHECK_DEMO=DIR: the demo cases (<case>/{post_op,event,dose}.nii.gz, prepared.npy) for
# gpu_extra.py; without it, its parity and classify steps are skipped.
# Tune gpu_bench.py with GPU_CHECK_* variables (Config there); a CPU smoke test:
#   GPU_CHECK_ARCH=tiny GPU_CHECK_SIZE_XYZ=24x28x24 GPU_CHECK_REPS=3 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
SITE=/tmp/site
PARTS=${GPU_CHECK_PARTS:-}
if [ -n "$PARTS" ] && [ ! -f "$SITE/.done" ]; then
    mkdir -p /tmp/payload_join && cat "$PARTS"/part* | tar xf - -C /tmp/payload_join \
        && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" /tmp/payload_join/payload/*.whl && touch "$SITE/.done" \
        || { echo "error: joining or installing the carried wheels failed"; exit 1; }
elif compgen -G ".whl/*.whl" > /dev/null && [ ! -f "$SITE/.done" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl && touch "$SITE/.done" \
        || { echo "error: installing .whl/ failed"; exit 1; }
fi
[ -d "$SITE" ] && export PYTHONPATH="$SITE:$PWD" || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# the CUDA 13 / cuDNN libraries torch's wheels bring, for ONNX Runtime's CUDA provider
NV=$(python3 -c "import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))" 2>/dev/null)
[ -n "$NV" ] && export LD_LIBRARY_PATH="$(find "$NV/nvidia" -name lib -type d | tr '\n' ':')${LD_LIBRARY_PATH:-}"
export PYTHONUNBUFFERED=1
WORK=${GPU_CHECK_WORK:-/tmp/ricenet_gpu_check}
DEST=${OUT:-$WORK}
export RICENET_CACHE=${RICENET_CACHE:-$WORK/cache}
mkdir -p "$WORK" "$DEST"
{
    echo "== gpu_check $(date -u +%FT%TZ) on $(hostname)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader \
        2>/dev/null || echo "no nvidia-smi: CPU-only run"
    if [ "${GPU_CHECK_SKIP_BENCH:-0}" != 1 ]; then
        timeout -k 10 "${GPU_CHECK_TIMEOUT_S:-300}" python3 benchmarks/gpu_bench.py \
            --json "$DEST/gpu_check.json" --work "$WORK"
        rc=$?
        [ $rc -eq 124 ] && echo "gpu_bench.py hit GPU_CHECK_TIMEOUT_S; partial figures in $DEST"
    fi
    if [ -n "${GPU_CHECK_DEMO:-}" ]; then
        timeout -k 10 "${GPU_CHECK_EXTRA_TIMEOUT_S:-240}" python3 benchmarks/gpu_extra.py \
            --demo "$GPU_CHECK_DEMO" --json "$DEST/gpu_extra.json" \
            --only "${GPU_CHECK_EXTRA:-parity,classify,occlusion}"
    fi
} 2>&1 | tee "$DEST/gpu_check.log"
