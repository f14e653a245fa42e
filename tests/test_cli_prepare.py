"""`ricecli prepare` through the real console script: one good run, every bad input -> exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from prepare_fixtures import POST_POSE, dose_in, pose, write_case


def ricecli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ricecli.cli", "prepare", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    paths = write_case(folder)
    flat = sitk.Image([20, 20, 20], sitk.sitkFloat32) + 5.0
    sitk.WriteImage(flat, str(folder / "constant.nii.gz"))
    sitk.WriteImage(sitk.Image([30, 30], sitk.sitkFloat32) + 1.0, str(folder / "flat2d.nii.gz"))
    (folder / "text.nii.gz").write_text("not an image")
    sitk.WriteImage(dose_in(pose(*POST_POSE)) * 100.0, str(folder / "dose_cgy.nii.gz"))
    far = dose_in(pose(*POST_POSE))
    far.SetOrigin((np.asarray(far.GetOrigin()) + 900.0).tolist())
    sitk.WriteImage(far, str(folder / "dose_far.nii.gz"))
    return {**paths, "folder": folder}


def _refused(proc, out, word: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and word in lines[0].lower()
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_prepare_writes_exactly_the_four_files(files, tmp_path):
    out = tmp_path / "prepared"
    proc = ricecli("--t1", files["post_op"], "--t1", files["event"], "--dose", files["dose"],
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "dose.nii.gz", "event.nii.gz", "post_op.nii.gz", "qa.json"]
    assert "dose" in proc.stdout and "time" in proc.stdout
    again = ricecli("--t1", files["post_op"], "--t1", files["event"], "--dose", files["dose"],
                    "--out", out)
    _refused(again, tmp_path / "never", "not empty")


@pytest.mark.slow
def test_dose_far_from_the_brain_is_refused(files, tmp_path):
    out = tmp_path / "o"
    proc = ricecli("--t1", files["post_op"], "--t1", files["event"], "--dose",
                   files["folder"] / "dose_far.nii.gz", "--out", out)
    _refused(proc, out, "overlap")


@pytest.mark.parametrize("bad", ["one_t1", "missing", "text", "2d", "constant", "cgy",
                                 "relative", "out_in_input"])
def test_bad_input_exits_2_with_one_line(files, tmp_path, bad, request):
    f = files["folder"]
    t1 = ["--t1", files["post_op"], "--t1", files["event"]]
    dose = ["--dose", files["dose"]]
    out = tmp_path / "o"
    if bad == "one_t1":
        args, word = ["--t1", files["post_op"], *dose], "two"
    elif bad == "missing":
        args, word = ["--t1", f / "nope.nii.gz", "--t1", files["event"], *dose], "nope"
    elif bad == "text":
        args, word = ["--t1", f / "text.nii.gz", "--t1", files["event"], *dose], "text.nii.gz"
    elif bad == "2d":
        args, word = ["--t1", f / "flat2d.nii.gz", "--t1", files["event"], *dose], "flat2d"
    elif bad == "constant":
        args, word = ["--t1", files["post_op"], "--t1", f / "constant.nii.gz", *dose], "constant"
    elif bad == "cgy":
        args, word = [*t1, "--dose", f / "dose_cgy.nii.gz"], "cgy"
    elif bad == "relative":
        shared = request.getfixturevalue("shared_data")
        rel = shared / "rtdose" / "pydicom" / "rtdose_relative_units.dcm"
        args, word = [*t1, "--dose", rel], "relative"
    else:  # an output folder inside a DICOM series folder given as input
        series = f / "series"
        series.mkdir(exist_ok=True)
        (series / "1.dcm").write_bytes(b"x")
        out = series / "out"
        args, word = ["--t1", files["post_op"], "--t1", series, *dose], "input"
    _refused(ricecli(*args, "--out", out), out, word)
