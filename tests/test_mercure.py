"""The mercure module contract: `ricecli study` with no arguments reads $MERCURE_IN_DIR (DICOM +
task.json), writes $MERCURE_OUT_DIR; run as the container runs it (a subprocess with only the
variables, a clean working folder, the input folder read-only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from cohort_tree import P1, P3
from model_fixtures import run_cli
from test_study import check_dicom_outputs, one_patient, snapshot


def task_json(in_dir: Path, settings: dict) -> None:
    """task.json as mercure writes it into the module's input folder (the parts ricecli reads)."""
    task = {"id": "3f1c", "info": {"action": "process", "uid_type": "series"},
            "process": {"module_name": "ricenet", "module_config": {}, "settings": settings,
                        "retain_input_images": False}}
    (in_dir / "task.json").write_text(json.dumps(task))


def read_only(folder: Path, on: bool) -> None:
    """chmod a-w on every folder and file under `folder` (and back)."""
    for path in [folder, *folder.rglob("*")]:
        mode = (0o555 if path.is_dir() else 0o444) if on else (0o755 if path.is_dir() else 0o644)
        path.chmod(mode)


@pytest.mark.slow
def test_mercure_entry_point_end_to_end(nbia_tree, tmp_path):
    """P1 (dose on the planning CT, REG to the MR): task.json picks the first follow-up and
    turns explain off; the container's one-line entry point `ricecli study` does the rest."""
    truth = nbia_tree.patients[P1]
    in_dir, out_dir, cwd = tmp_path / "in", tmp_path / "out", tmp_path / "cwd"
    one_patient(nbia_tree, P1, in_dir)
    event_study = str(pydicom.dcmread(next((in_dir / P1).glob("10-20-2000*/*/*.dcm"))
                                      ).StudyInstanceUID)
    task_json(in_dir, {"device": "cpu", "explain": False, "event_study": event_study})
    out_dir.mkdir()
    cwd.mkdir()
    read_only(in_dir, True)
    before = snapshot(in_dir)
    # HOME apart from the working folder: onnxruntime keeps a device id in ~/.cache
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home"),
           "MERCURE_IN_DIR": str(in_dir),
           "MERCURE_OUT_DIR": str(out_dir)}
    try:
        done = subprocess.run([sys.executable, "-m", "ricecli.cli", "study"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=600)
        assert snapshot(in_dir) == before
    finally:
        read_only(in_dir, False)
    assert done.returncode == 0, done.stderr
    record = json.loads((out_dir / "result.json").read_text())
    assert record["settings"]["explain"] is False and record["settings"]["device"] == "cpu"
    assert record["study"]["event"]["series_uid"] == truth.event_series_uids[0]
    assert record["study"]["dose_frame_series_uid"] == truth.dose_frame_series_uid
    assert record["study"]["dose_frame_transform"] is not None  # from the REG
    assert [n[:3] for n in record["dicom_files"]] == ["SR_"]  # explain off: no map
    check_dicom_outputs(out_dir, record, truth.event_series_uids[0])
    assert done.stdout.splitlines()[0] == (out_dir / "status.txt").read_text().strip()
    assert not list(cwd.iterdir())  # nothing written beside the container's working folder


def test_mercure_missing_dose_and_bad_settings(nbia_tree, tmp_path, capsys, monkeypatch):
    in_dir, out_dir = one_patient(nbia_tree, P3, tmp_path / "in"), tmp_path / "out"
    monkeypatch.setenv("MERCURE_IN_DIR", str(in_dir))
    monkeypatch.setenv("MERCURE_OUT_DIR", str(out_dir))
    task_json(in_dir, {"explain": True})
    code, text, _ = run_cli(["study"], capsys)
    assert code == 2 and "missing input no_dose" in text
    record = json.loads((out_dir / "result.json").read_text())
    assert record["missing"]["code"] == "no_dose" and not list(out_dir.glob("*.dcm"))

    task_json(in_dir, {"explian": False})  # a typo is refused, not ignored
    code, _, err = run_cli(["study"], capsys)
    assert code == 2 and "task.json" in err and "'explian'" in err
    task_json(in_dir, {"explain": "no"})
    code, _, err = run_cli(["study"], capsys)
    assert code == 2 and "not a bool" in err

    monkeypatch.delenv("MERCURE_IN_DIR")
    code, _, err = run_cli(["study"], capsys)
    assert code == 2 and "MERCURE_IN_DIR" in err and len(err.strip().splitlines()) == 1


def test_task_settings_of_a_list_of_steps(tmp_path):
    from ricecli.commands.study import task_settings

    task = tmp_path / "task.json"
    task.write_text(json.dumps({"process": [{"settings": {"other": 1}},
                                            {"settings": {"model": "/m.onnx", "explain": False}}]}))
    assert task_settings(task) == {"model": Path("/m.onnx"), "explain": False}
