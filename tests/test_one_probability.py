"""One case, one p: classify, explain, batch and demo show the same calibrated p(recurrence)
everywhere (console, JSON, results CSV, explain.json, overview.png's title, the SR, the demo
table); the uncalibrated p appears only under that name (JSON, SR)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from dataclasses import replace

import pydicom
import pytest
import SimpleITK as sitk
from model_fixtures import TINY_SPEC, export_tiny_model, run_cli

from ricecli.io.dicom_write import write_mr_series
from ricecli.spec import Calibration

CAL = Calibration(temperature=2.5, conformal_alpha=0.1, conformal_qhat=0.6, n_cases=170)


def _numbers(text: str, after: str) -> list[str]:
    """Every 0.xxx printed right after `after` (rich may wrap lines: whitespace collapsed)."""
    flat = " ".join(text.split())
    return re.findall(re.escape(after) + r"\s*(\d\.\d{3})", flat)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo run with a calibrated tiny model; its first case is the one case."""
    root = tmp_path_factory.mktemp("one_p")
    model = export_tiny_model(root / "ricenet-cal.onnx", spec=replace(TINY_SPEC, calibration=CAL))
    stdout, stderr = io.StringIO(), io.StringIO()  # capsys is per test; the demo runs once
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code, _, _ = run_cli(["demo", "--out", str(root / "demo"), "--model", str(model),
                              "--device", "cpu"])
    assert code == 0, stderr.getvalue()
    summary = json.loads((root / "demo" / "demo.json").read_text())["cases"][0]
    return {"root": root, "model": model, "summary": summary, "table": stdout.getvalue(),
            "folder": root / "demo" / "cases" / summary["case_id"]}


@pytest.mark.slow
def test_every_output_shows_the_same_calibrated_p(demo, capsys):
    root, model, folder = demo["root"], str(demo["model"]), demo["folder"]
    event = write_mr_series(sitk.ReadImage(str(folder / "event.nii.gz"), sitk.sitkFloat32),
                            root / "event_dicom", series_description="event T1c")
    for f in event.iterdir():  # a header value --dicom-out must clean (and say so)
        ds = pydicom.dcmread(f)
        ds.PatientSex = "0000"
        ds.save_as(f)
    case = ["--t1", str(folder / "post_op.nii.gz"), "--t1", str(event), "--dose",
            str(folder / "dose.nii.gz"), "--model", model, "--device", "cpu"]

    code, out, err = run_cli(["classify", *case, "--json", str(root / "r.json"),
                              "--dicom-out", str(root / "dcm")], capsys)
    assert code == 0, err
    record = json.loads((root / "r.json").read_text())
    p = f"{record['probabilities']['recurrence']:.3f}"
    raw = f"{record['probabilities_uncalibrated']['recurrence']:.3f}"
    assert p != raw, "the test needs a case where calibration changes p"
    console = out + err
    assert _numbers(console, "p(recurrence) =") == [p]
    assert raw not in console.replace(p, "")  # the uncalibrated p is not on screen
    members = [f"{m['probabilities_calibrated']['recurrence']:.3f}" for m in record["members"]]
    assert all(m in console for m in members)  # the members table is calibrated too

    truth = folder / "event_lesion_mask.nii.gz"  # the simulator's lesion, given as a mask
    code, out, err = run_cli(["explain", *case, "--out", str(root / "explain"),
                              "--cube-mm", "24", "--stride-mm", "24", "--lesion-mask",
                              str(truth), "--dicom-out", str(root / "dcm_explain")], capsys)
    assert code == 0, err
    assert "DICOM header: PatientSex '0000'" in out + err  # explain says it, as classify does
    explained = json.loads((root / "explain" / "explain.json").read_text())
    assert f"{explained['target_probability']:.3f}" == p
    assert f"p(recurrence) = {p} (calibrated)" in explained["overview"]["title"]
    assert _numbers(out + err, "p(recurrence) =") == [p]
    assert f"{explained['classification_uncalibrated']['recurrence']:.3f}" == raw
    assert explained["map_vs_lesion"]["source"] == str(truth)
    assert "(given: --lesion-mask)" in explained["overview"]["rows"][0]["name"]
    assert explained["map_vs_lesion"]["lesion"]["voxels"] > 0

    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([["case_id", "post_op", "event", "dose"],
                                 ["one", folder / "post_op.nii.gz", event,
                                  folder / "dose.nii.gz"]])
    code, _, err = run_cli(["batch", str(manifest), "--out", str(root / "results.csv"),
                            "--model", model, "--device", "cpu"], capsys)
    assert code == 0, err
    (row,) = csv.DictReader(open(root / "results.csv", newline=""))
    assert f"{float(row['p_recurrence']):.3f}" == p
    assert not any(k.endswith("_raw") for k in row)

    import highdicom as hd

    for dcm in (root / "dcm", root / "dcm_explain"):  # classify's SR and explain's
        (sr_path,) = dcm.glob("SR_*.dcm")
        (group,) = hd.sr.srread(sr_path).content.get_image_measurement_groups()
        values = {m.name.value: m for m in group.get_measurements()}
        assert f"{values['RN001'].value:.3f}" == p
        assert "(calibrated)" in values["RN001"].name.meaning
        assert f"{values['RN002'].value:.3f}" == raw
        assert "uncalibrated" in values["RN002"].name.meaning
        assert pydicom.dcmread(sr_path).PatientSex == ""
    assert len(list((root / "dcm_explain").glob("PM_*.dcm"))) == 1

    summary = demo["summary"]  # the demo ran the same files: same p in its table and JSON
    assert f"{summary['p_recurrence']:.3f}" == p
    assert p in " ".join(demo["table"].split())
    result = json.loads((demo["folder"] / "result.json").read_text())
    assert f"{result['probabilities']['recurrence']:.3f}" == p
    _demo_json_names_inputs_where_they_are_and_a_lesion_column(demo)


def _demo_json_names_inputs_where_they_are_and_a_lesion_column(demo: dict) -> None:
    """(Part of the test above: the demo fixture is built once per worker, so one test.)"""
    result = json.loads((demo["folder"] / "result.json").read_text())
    for key in ("post_op", "event", "dose"):
        path = result["inputs"][key]
        assert ".partial" not in path and (demo["folder"] / path.split("/")[-1]).is_file()
        assert path.startswith(str(demo["root"]))
    explained = json.loads((demo["folder"] / "explain" / "explain.json").read_text())
    assert explained["inputs"] == result["inputs"]
    table = " ".join(demo["table"].split())
    assert "peak (LPS mm)" not in table and "lesion" in table
    assert demo["summary"]["top_5pct_of_map_in_lesion"] in ("no", "no lesion found") or \
        demo["summary"]["top_5pct_of_map_in_lesion"].startswith("yes (")
