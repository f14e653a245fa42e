"""train/calibrate.py: temperature, conformal threshold, Brier/ECE; fit -> export -> ricecli."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ricecli.contract import SPEC_KEY
from ricecli.inference.calibration import assess
from ricecli.inference.model import load_model
from ricecli.spec import Calibration, Spec
from train.calibrate import (
    brier,
    calibration_metrics,
    conformal_qhat,
    ece,
    fit_temperature,
    logit_margin,
    nll,
    reliability_bins,
    sigmoid,
)
from train.evaluate import run_evaluate
from train.fit import run_fit

ROOT = Path(__file__).resolve().parents[2]


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(3)
    true_t = 2.5
    margin = rng.normal(0.0, 4.0, 20000)          # over-confident logits
    y = (rng.random(20000) < sigmoid(margin / true_t)).astype(int)
    t = fit_temperature(margin, y)
    assert t == pytest.approx(true_t, rel=0.05)
    assert nll(margin, y, t) < nll(margin, y, 1.0)
    # already calibrated logits keep T close to 1
    y1 = (rng.random(20000) < sigmoid(margin)).astype(int)
    assert fit_temperature(margin, y1) == pytest.approx(1.0, rel=0.05)


def test_brier_and_ece_on_a_hand_checked_example():
    p = np.array([0.1, 0.1, 0.9, 0.9, 0.65])
    y = np.array([0, 1, 1, 1, 0])
    # bins: [0.1, 0.2): mean p 0.1, freq 0.5, 2 cases; [0.9, 1.0]: 0.9 vs 1.0, 2 cases;
    # [0.6, 0.7): 0.65 vs 0.0, 1 case -> ECE = 0.4*2/5 + 0.1*2/5 + 0.65/5 = 0.33
    assert ece(p, y) == pytest.approx(0.33)
    assert brier(p, y) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01 + 0.4225) / 5)
    bins = reliability_bins(p, y)
    assert [b["n"] for b in bins] == [0, 2, 0, 0, 0, 0, 1, 0, 0, 2]
    assert ece(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0  # p = 1.0 falls in the last bin
    m = calibration_metrics(p, y, n_boot=200, seed=1)
    assert m["brier"] == pytest.approx(0.2525)
    lo, hi = m["ci95"]["ece"]
    assert 0.0 <= lo <= hi <= 1.0


def test_conformal_threshold_and_logit_recovery():
    # scores 1 - p(true): 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 0.9, 0.05, 0.15, 0.25
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.8, 0.9, 0.05, 0.15, 0.25])
    # n = 10, alpha 0.2: k = ceil(11 * 0.8) = 9 -> 9th smallest score = 0.8
    assert conformal_qhat(p, y, 0.2) == pytest.approx(0.8)
    assert conformal_qhat(p, y, 0.01) == 1.0  # too few cases for 99 %: every label
    z = logit_margin(np.array([0.25]), np.array([0.75]))
    assert z[0] == pytest.approx(np.log(3.0))
    assert np.isfinite(logit_margin(np.array([0.0]), np.array([1.0]))).all()


@pytest.mark.slow
def test_fit_keeps_oof_and_export_carries_the_calibration(tmp_path, cohort, small_config):
    manifest, cache = cohort
    run_fit(small_config(tmp_path, manifest, cache, epochs=3))
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "oof.csv").open()))
    folds = json.loads((run / "folds.json").read_text())
    assert sorted(r["case_id"] for r in rows) == sorted(c for v in folds["val"] for c in v)
    assert all(r["case_id"] in folds["val"][int(r["fold"])] for r in rows)
    for r in rows:
        assert float(r["p_RICE"]) + float(r["p_recurrence"]) == pytest.approx(1.0, abs=1e-5)
    record = json.loads((run / "calibration.json").read_text())
    y = np.array([int(r["label"]) for r in rows])
    margin = logit_margin(np.array([float(r["p_RICE"]) for r in rows]),
                          np.array([float(r["p_recurrence"]) for r in rows]))
    t = record["calibration"]["temperature"]
    assert t == pytest.approx(fit_temperature(margin, y), rel=1e-4)
    assert record["oof"]["nll_calibrated"] <= record["oof"]["nll_raw"] + 1e-9

    res = run_evaluate(run, manifest, "test", n_boot=50, quiet=True)
    cal = res["calibration"]
    assert cal["calibration"]["temperature"] == t
    assert set(cal["raw"]) == {"brier", "ece", "ci95"} and 0 <= cal["calibrated"]["ece"] <= 1
    png = run / "eval-test" / "reliability.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"

    out = tmp_path / "model.onnx"
    proc = subprocess.run([sys.executable, str(ROOT / "export" / "to_onnx.py"), "--run",
                           str(run), "--out", str(out), "--exporter", "torchscript"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert f"calibration: temperature {t:.3f}" in proc.stdout
    spec = Spec.from_json({p.key: p.value for p in onnx.load(str(out)).metadata_props}[SPEC_KEY])
    assert spec.calibration == Calibration.from_dict(record["calibration"])
    loaded = load_model(out)
    assert loaded.spec.calibration.temperature == t
    # ricecli applies it to what the ONNX model outputs
    x = np.random.default_rng(0).standard_normal(
        (1, len(spec.channels), *spec.model_space.shape_zyx), dtype=np.float32)
    mean, member = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"volumes": x})
    rec = assess(mean[0], member[0], loaded.spec)
    want = sigmoid(logit_margin(member[0, :, 0], member[0, :, 1]) / t).mean()
    assert rec.probabilities["recurrence"] == pytest.approx(want, abs=1e-9)
    assert rec.calibration["applied"] and rec.calibration["temperature"] == t
    none = tmp_path / "plain.onnx"
    proc = subprocess.run([sys.executable, str(ROOT / "export" / "to_onnx.py"), "--run",
                           str(run), "--out", str(none), "--exporter", "torchscript",
                           "--calibration", "none"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and load_model(none).spec.calibration is None


@pytest.mark.parametrize("backend", ["matplotlib", "pillow"])
def test_reliability_png(tmp_path, monkeypatch, backend):
    from PIL import Image

    from train.calibrate import reliability_png

    if backend == "pillow":
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails -> pillow drawing
    p = np.array([0.1, 0.3, 0.55, 0.8, 0.95])
    y = np.array([0, 0, 1, 1, 1])
    path = reliability_png({"raw": (p, y), "calibrated": (p * 0.9, y)}, tmp_path / "r.png",
                           "test")
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) >= 300
        colours = np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)
        assert len(colours) > 3  # something was drawn
