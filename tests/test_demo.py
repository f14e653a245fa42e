"""The shipped default model and `ricecli demo`, the README's first command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import SimpleITK as sitk

from ricecli.inference.model import default_model_path, load_model
from ricecli.spec import PRESETS


def test_default_model_is_shipped_small_and_says_what_it_is():
    path = default_model_path()
    assert path.is_file(), "the default model must ship inside the ricecli package"
    assert path.stat().st_size < 25e6
    model = load_model(None)
    assert model.spec.model_space == PRESETS["edge"].model_space
    assert model.spec.channels == ("post_op", "event", "dose")
    assert model.members == 5
    assert "simulated" in json.dumps(model.card).lower()
    assert "not for clinical use" in model.card["intended_use"].lower()


@pytest.mark.slow
def test_demo_simulates_classifies_and_explains_both_classes(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "ricecli.cli", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "demo.json").read_text())
    assert [c["truth"] for c in record["cases"]] == ["RICE", "recurrence"]
    p_recurrence = {}
    for case in record["cases"]:
        folder = out / "cases" / case["case_id"]
        result = json.loads((folder / "result.json").read_text())
        assert result["qa"]["verdict"] != "fail" and result["label"] == case["predicted"]
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
        assert case["p_recurrence"] == result["probabilities"]["recurrence"]
        p_recurrence[case["truth"]] = case["p_recurrence"]
        heat = sitk.ReadImage(str(folder / "explain" / "occlusion.nii.gz"))
        event = sitk.ReadImage(str(folder / "event.nii.gz"))
        assert heat.GetSize() == event.GetSize()
        assert heat.GetDirection() == pytest.approx(event.GetDirection())
        assert (folder / "explain" / "overview.png").stat().st_size > 10_000
    # the shipped model orders the two cases as their truth does
    assert p_recurrence["recurrence"] > p_recurrence["RICE"]
    # a second run refuses to overwrite the first (exit 2, one line)
    again = subprocess.run([sys.executable, "-m", "ricecli.cli", "demo", "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
