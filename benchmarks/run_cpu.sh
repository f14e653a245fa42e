#!/usr/bin/env bash
# Run every CPU benchmark one after the other on a quiet machine and keep each script's final
# JSON line in benchmarks/results/<name>.json (benchmarks/RESULTS.md quotes them).
# Usage: bash benchmarks/run_cpu.sh [CHECKPOINT]   (a trained fold, for the occlusion network)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # train/ and export/ run from a checkout
mkdir -p benchmarks/results
ckpt=${1:-}
run() {  # name, command...
  local name=$1; shift
  echo "== $name: $*"
  local log; log=$(mktemp)
  /usr/bin/time -f "$name: %e s wall, %U s user, %M KB max RSS" "$@" 2>&1 | tee "$log" | tail -4
  grep -E '^\{' "$log" | tail -1 > "benchmarks/results/$name.json"
  rm -f "$log"
}
lscpu | grep -E "Model name|^CPU\(s\)" > benchmarks/results/machine.txt
python3 -c "import onnxruntime, SimpleITK, numpy; print('onnxruntime', onnxruntime.__version__, '| SimpleITK', SimpleITK.Version_VersionString(), '| numpy', numpy.__version__)" >> benchmarks/results/machine.txt
run prepare python3 benchmarks/prepare.py --repeat 3
run latency python3 benchmarks/latency.py --repeats 3
run brain python3 benchmarks/brain.py
python3 benchmarks/pose.py --simulated --out benchmarks/results/pose.json
run occlusion python3 benchmarks/occlusion.py --threads 2 ${ckpt:+--checkpoint "$ckpt"}
run simulate python3 benchmarks/simulate.py --cases 4
run train_throughput python3 benchmarks/train_throughput.py --preset edge --device cpu --batch-size 16 --steps 6 --cases 32
demo_dir=$(mktemp -d)
/usr/bin/time -f "demo: %e s wall, %U s user" ricecli demo --out "$demo_dir/demo" 2>&1 | tail -3
cp "$demo_dir/demo/demo.json" benchmarks/results/demo.json
rm -rf "$demo_dir"
