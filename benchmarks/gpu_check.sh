#!/usr/bin/env bash
# One check for a lent GPU machine (<= 8 min). First a preflight: ricecli's own open_engine
# on the shipped model for --device auto/cpu/cuda/tensorrt, with the providers each session
# really got (session.get_providers()) or the exit-2 message. Then export both presets to ONNX
# (fp32 and fp16, parity vs PyTorch) and time PyTorch CUDA (fp32, fp16/bf16 autocast,
# channels_last_3d), ONNX Runtime through ricecli's engines (rows labelled by the provider the
# session runs on), and, last, TensorRT engines built by export/to_trt.py in a child process
# bounded by the time left and timed through ricecli's TensorRTEngine, at batch 1 and the
# occlusion batch. Prints a short table last; full figures go to $OUT/gpu_check.json and
# $OUT/gpu_check.log (or /tmp/ricenet_gpu_check without $OUT).
# If monai is missing (the GPU image lacks it), the wheels in .whl/ are installed first.
# Tune with GPU_CHECK_* variables (benchmarks/gpu_bench.py, Config); a CPU smoke test:
#   GPU_CHECK_ARCH=tiny GPU_CHECK_SIZE_XYZ=24x28x24 GPU_CHECK_REPS=3 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import monai" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "error: installing .whl/ failed"; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
WORK=${GPU_CHECK_WORK:-/tmp/ricenet_gpu_check}
DEST=${OUT:-$WORK}
export RICENET_CACHE=${RICENET_CACHE:-$WORK/cache}  # ORT TensorRT engine caches stay in $WORK
mkdir -p "$WORK" "$DEST"
{
    echo "== gpu_check $(date -u +%FT%TZ) on $(hostname)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader \
        2>/dev/null || echo "no nvidia-smi: CPU-only run"
    timeout -k 10 "${GPU_CHECK_TIMEOUT_S:-450}" python3 benchmarks/gpu_bench.py \
        --json "$DEST/gpu_check.json" --work "$WORK"
    rc=$?
    [ $rc -eq 124 ] && echo "gpu_bench.py hit GPU_CHECK_TIMEOUT_S; partial figures in $DEST"
    exit $rc
} 2>&1 | tee "$DEST/gpu_check.log"
