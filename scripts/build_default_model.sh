#!/usr/bin/env bash
# Rebuild the shipped default model (ricecli/data/model/ricenet-edge.onnx) from scratch on a
# CPU: simulate the cohort, train the edge preset's 5-fold ensemble, evaluate it on the
# held-out simulated cases, export it with parity checks. Exactly what produced the
# committed model (see MODEL_CARD.md for the figures and times).
# Calibration: fit writes RUN/oof.csv and RUN/calibration.json (temperature + conformal
# threshold on the out-of-fold predictions); both evaluations report Brier/ECE raw vs
# calibrated (RUN/eval-*/metrics.json, reliability.png); the export carries the calibration
# in the model's spec (it fails if calibration.json is missing). The export merges the members'
# stem convs (export/merge_convs.py); the committed model, exported before that, was merged
# once with `python export/merge_convs.py IN OUT` (the same outputs, bit for bit).
# Usage: bash scripts/build_default_model.sh [WORKDIR]   (needs: pip install -e '.[train,cpu]')
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs}
mkdir -p "$work"
export RICENET_CACHE="$work/cache"

ricecli simulate --n 200 --seed 2026 --out "$work/cohort200" --jobs 2
python -m train fit --manifest "$work/cohort200/manifest.csv" --preset edge --folds 5 \
    --epochs 30 --batch-size 16 --workers 2 --device cpu --max-minutes 60 --seed 0 \
    --cache "$work/cache" --out "$work/default-edge"
python -m train evaluate --run "$work/default-edge" --manifest "$work/cohort200/manifest.csv" \
    --split cv --device cpu
python -m train evaluate --run "$work/default-edge" --manifest "$work/cohort200/manifest.csv" \
    --split test --device cpu
python export/to_onnx.py --run "$work/default-edge" --out ricecli/data/model/ricenet-edge.onnx \
    --name ricenet-edge-sim --exporter torchscript \
    --calibration "$work/default-edge/calibration.json"
