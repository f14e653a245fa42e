"""The common wrong inputs, through the real CLI: the exact one-line message, exit code 2, and
nothing written. These lines are what a user reads; a change to one shows up here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from model_fixtures import run_cli


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr, which is returned."""
    code, _, err = run_cli([str(a) for a in args], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    return lines[0]


@pytest.fixture
def case(synthetic_case: dict, tmp_path: Path) -> dict:
    """The synthetic case's three files and a new output folder beside them."""
    return {**synthetic_case, "out": tmp_path / "prepared"}


def test_missing_file(case, capsys):
    missing = case["post_op"].parent / "no_such_scan.nii.gz"
    line = _refused(["prepare", "--t1", missing, "--t1", case["event"], "--dose", case["dose"],
                     "--out", case["out"]], capsys)
    assert line == f"error: {missing}: file not found. Fix: check the path and its spelling"
    assert not case["out"].exists()


def test_one_t1_only(case, capsys):
    line = _refused(["prepare", "--t1", case["post_op"], "--dose", case["dose"],
                     "--out", case["out"]], capsys)
    assert line == ("error: --t1 was given 1 time, it needs exactly two. Fix: pass --t1 POSTOP "
                    "--t1 EVENT (the post-operative scan first)")
    assert not case["out"].exists()


def test_a_dose_given_as_the_post_op_t1(case, tmp_path, capsys):
    plan_dose = shutil.copy(case["dose"], tmp_path / "plan_dose.nii.gz")
    line = _refused(["prepare", "--t1", plan_dose, "--t1", case["event"], "--dose", case["dose"],
                     "--out", case["out"]], capsys)
    assert line == (f"error: {plan_dose}: looks like a dose map, not an MR scan (smooth and "
                    "featureless: texture 0.02 < 0.2); given as the post-op (first) --t1. Fix: "
                    "give the T1c MR scans: --t1 POSTOP --t1 EVENT (the first --t1 is the post-op "
                    "scan)")
    assert not case["out"].exists()


def test_unknown_device(case, capsys):
    line = _refused(["classify", "--t1", case["post_op"], "--t1", case["event"],
                     "--dose", case["dose"], "--device", "gpu"], capsys)
    assert line == "error: unknown device 'gpu'. Fix: use one of auto, cpu, cuda, tensorrt"


@pytest.mark.parametrize("command", ["prepare", "explain"])
def test_output_folder_exists(command, case, capsys):
    case["out"].mkdir()
    (case["out"] / "keep.txt").write_text("mine")
    line = _refused([command, "--t1", case["post_op"], "--t1", case["event"],
                     "--dose", case["dose"], "--out", case["out"]], capsys)
    assert line == (f"error: {case['out'].resolve()}: the output folder exists and is not empty. "
                    "Fix: choose a new --out folder, or pass --overwrite to replace it")
    assert [p.name for p in case["out"].iterdir()] == ["keep.txt"]


def test_model_file_not_a_ricenet_model(case, tmp_path, capsys):
    from onnx import TensorProto, helper, save

    value = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain",
                              [value("x", TensorProto.FLOAT, [1])],
                              [value("y", TensorProto.FLOAT, [1])])
    plain = tmp_path / "plain.onnx"
    save(helper.make_model(graph), str(plain))
    line = _refused(["classify", "--t1", case["post_op"], "--t1", case["event"],
                     "--dose", case["dose"], "--model", plain], capsys)
    assert line == (f"error: {plain.resolve()}: ONNX model without ricenet metadata (no "
                    "'ricenet.spec' in metadata_props). Fix: export it with export/to_onnx.py, "
                    "which writes the spec and model card into the file")


def test_model_file_missing(case, tmp_path, capsys):
    missing = tmp_path / "nothere.onnx"
    line = _refused(["classify", "--t1", case["post_op"], "--t1", case["event"],
                     "--dose", case["dose"], "--model", missing], capsys)
    assert line == (f"error: {missing}: model file not found. Fix: check the --model path (a "
                    "ricenet .onnx file)")


# --- an internal error keeps its whole cause; RICENET_DEBUG=1 adds the traceback --------------

def _itk_error() -> RuntimeError:
    """A real multi-line SimpleITK failure: its cause is on the second line."""
    import SimpleITK as sitk

    try:
        sitk.RecursiveGaussian(sitk.Image([5, 5, 3], sitk.sitkFloat32), 1.0, direction=2)
    except RuntimeError as err:
        return err
    raise AssertionError("ITK smoothed 3 voxels")


def test_internal_error_line_keeps_the_cause(capsys, monkeypatch):
    from ricecli.cli import report_error

    monkeypatch.delenv("RICENET_DEBUG", raising=False)
    assert report_error(_itk_error()) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("internal error: RuntimeError: Exception "
                                                   "thrown in SimpleITK RecursiveGaussian")
    assert "The number of pixels along direction 2 is less than 4" in lines[0]
    assert lines[0].endswith("RICENET_DEBUG=1 shows the traceback)")


def test_internal_error_with_debug_prints_the_traceback(capsys, monkeypatch):
    from ricecli.cli import report_error

    monkeypatch.setenv("RICENET_DEBUG", "1")
    try:
        raise ValueError("outer") from _itk_error()
    except ValueError as err:
        assert report_error(err) == 1
    err_text = capsys.readouterr().err
    assert err_text.startswith("Traceback (most recent call last)")
    assert "in _itk_error" in err_text  # the frames of the cause, too
    last = err_text.strip().splitlines()[-1]
    assert last.startswith("internal error: ValueError: outer (caused by RuntimeError: ")
    assert "less than 4" in last


def test_train_without_torch_names_the_extra():
    """`python -m train fit` where torch and monai cannot be imported: exit 2 and the install
    line, not an internal ModuleNotFoundError."""
    import subprocess
    import sys

    block = """
import importlib.abc, runpy, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "monai"):
            raise ImportError(f"blocked import of {name}")
sys.meta_path.insert(0, NoTorch())
sys.argv = ["python -m train", "fit", "--manifest", "m.csv", "--out", "run"]
runpy.run_module("train", run_name="__main__")
"""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", block], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "error: training needs torch, monai, which are not installed. Fix: install the training "
        "extra from the checkout: pip install -e '.[train]' (PyTorch, MONAI; CUDA builds: see "
        "pytorch.org)")
    assert not (root / "run").exists()


def test_relative_beam_dose_names_both_problems_at_once(case, tmp_path, capsys):
    """An RTDOSE in RELATIVE units of one BEAM: one refusal names both (it took two runs)."""
    import SimpleITK as sitk

    from ricecli.io.dicom_write import write_rtdose

    rd = write_rtdose(sitk.ReadImage(str(case["dose"])) / 60.0, tmp_path / "RD.beam.dcm",
                      summation="BEAM", units="RELATIVE")
    line = _refused(["prepare", "--t1", case["post_op"], "--t1", case["event"], "--dose", rd,
                     "--out", case["out"]], capsys)
    assert line == (
        f"error: {rd}: DoseUnits RELATIVE: the dose is not in Gy; and DoseSummationType BEAM: "
        "only part of the plan's dose. Fix: export the dose in GY, or give the Gy value of "
        "relative 1.0 with --dose-relative-scale GY (Gy per stored unit); and export the plan "
        "dose (DoseSummationType PLAN) from the planning system")
    assert not case["out"].exists()
