"""`ricecli explain` end to end: real preparation, a real ONNX Runtime session on a tiny exported
ensemble, maps on an oblique event scan's own grid, and bad input writing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from model_fixtures import run_cli

FILES = {"occlusion.nii.gz", "occlusion_post_op.nii.gz", "occlusion_event.nii.gz",
         "occlusion_dose.nii.gz", "overview.png", "explain.json"}


def _oblique_copy(path: Path, out: Path) -> Path:
    """The same scan stored on an oblique grid (rotated direction, 2 x 2.5 x 3 mm voxels)."""
    img = sitk.ReadImage(str(path), sitk.sitkFloat32)
    lo = np.array(img.TransformIndexToPhysicalPoint((0, 0, 0)))
    hi = np.array(img.TransformIndexToPhysicalPoint([n - 1 for n in img.GetSize()]))
    centre = (lo + hi) / 2
    rot = sitk.Euler3DTransform(centre.tolist(), 0.25, -0.15, 0.35)
    spacing = np.array([2.0, 2.5, 3.0])
    size = [int(np.ceil(np.linalg.norm(hi - lo) / s)) for s in spacing]
    direction = np.reshape(rot.GetMatrix(), (3, 3))
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin((centre - direction @ (spacing * (np.array(size) - 1) / 2)).tolist())
    sitk.WriteImage(sitk.Resample(img, grid, sitk.Transform(), sitk.sitkLinear, 0.0), str(out))
    return out


def _args(case: dict, event: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["explain", "--t1", str(case["post_op"]), "--t1", str(event), "--dose",
            str(case["dose"]), "--model", str(model), "--device", "cpu", "--out", str(out),
            "--cube-mm", "24", "--stride-mm", "24", *extra]


@pytest.fixture(scope="module")
def explained(tmp_path_factory, tiny_model, synthetic_case) -> dict:
    root = tmp_path_factory.mktemp("explain")
    event = _oblique_copy(synthetic_case["event"], root / "event_oblique.nii.gz")
    code, _, _ = run_cli(_args(synthetic_case, event, tiny_model, root / "out",
                               "--channels", "each", "--target", "predicted"))
    return {"code": code, "out": root / "out", "event": event, "root": root}


@pytest.mark.slow
def test_files_and_geometry_on_the_oblique_event_grid(explained):
    assert explained["code"] == 0
    out = explained["out"]
    assert {p.name for p in out.iterdir()} == FILES
    event = sitk.ReadImage(str(explained["event"]))
    assert not np.allclose(event.GetDirection(), np.eye(3).ravel())  # really stored oblique
    for name in FILES - {"overview.png", "explain.json"}:
        heat = sitk.ReadImage(str(out / name))
        assert heat.GetSize() == event.GetSize()
        assert np.allclose(heat.GetSpacing(), event.GetSpacing(), atol=1e-6)
        assert np.allclose(heat.GetOrigin(), event.GetOrigin(), atol=1e-4)
        assert np.allclose(heat.GetDirection(), event.GetDirection(), atol=1e-6)
    heat = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "occlusion.nii.gz")))
    assert np.abs(heat).max() > 0


@pytest.mark.slow
def test_explain_json(explained):
    rec = json.loads((explained["out"] / "explain.json").read_text())
    pos = rec["positions"]
    assert pos["total"] == 4 * 6 * 7 * 6  # 4 maps, 24 mm = 4 voxels of 6 mm on 24x28x24
    assert pos["run"] + pos["skipped_unchanged"] + pos["skipped_outside_region"] == pos["total"]
    assert pos["skipped_unchanged"] > 0
    probs = rec["probabilities"]
    assert rec["target"] == max(probs, key=probs.get)  # --target predicted
    # one p: the classification's (calibrated when the model has a calibration), in the title
    assert rec["target_probability"] == rec["classification"][rec["target"]]
    assert rec["target_probability"] == pytest.approx(probs[rec["target"]], abs=1e-6)
    assert f"p({rec['target']}) = {rec['target_probability']:.3f}" in rec["overview"]["title"]
    assert set(rec["classification_uncalibrated"]) == set(probs)
    assert rec["settings"]["channels"] == "each" and rec["cube_voxels_zyx"] == [4, 4, 4]
    assert {"occlusion", "resample_to_event"} <= set(rec["timings_s"])
    assert rec["model"]["name"] == "ricenet-test"
    # the recorded peak is the map's largest |value|, at that voxel's world position
    heat = sitk.ReadImage(str(explained["out"] / "occlusion.nii.gz"))
    arr = sitk.GetArrayFromImage(heat)
    i = rec["peak"]["index_xyz"]
    assert abs(arr[i[2], i[1], i[0]]) == pytest.approx(np.abs(arr).max(), abs=1e-6)
    assert np.allclose(heat.TransformIndexToPhysicalPoint(i), rec["peak"]["world_lps_mm"],
                       atol=1e-3)


@pytest.mark.slow
def test_rows_cut_through_the_found_lesion_and_the_strongest_region(explained):
    rec = json.loads((explained["out"] / "explain.json").read_text())
    lesion_row, strongest_row = rec["overview"]["rows"]
    assert lesion_row["name"].startswith("row 1: through the enhancing lesion (found")
    assert strongest_row["lps_mm"] == pytest.approx(rec["peak"]["world_lps_mm"])
    # the synthetic event's new enhancement: a 6 mm ball at template (-25, 10, 15) mm
    from model_fixtures import _moved_template

    _img, move_event = _moved_template(-3.0, (-5.0, 2.0, -6.0), 2.5, seed=2)
    where = move_event.GetInverse().TransformPoint((-25.0, 10.0, 15.0))
    assert np.linalg.norm(np.subtract(lesion_row["lps_mm"], where)) < 12.0  # 2 voxels of 6 mm
    on = rec["map_vs_lesion"]
    assert on["source"] == "found" and on["lesion"]["voxels"] > 0
    assert 0.0 <= on["top_fraction_in_lesion"] <= 1.0
    assert rec["overview"]["colour_scale_delta_p"] == [-0.2, 0.2]
    assert rec["overview"]["painted"] == (rec["max_abs_delta_p"] >= rec["members_sd_p"])


def test_unreadable_lesion_mask_exits_2_before_any_work(tiny_model, synthetic_case, tmp_path,
                                                         capsys):
    out, bad = tmp_path / "out", tmp_path / "lesion.nii.gz"
    bad.write_bytes(b"not an image")
    code, _, err = run_cli(_args(synthetic_case, synthetic_case["event"], tiny_model, out,
                                 "--lesion-mask", str(bad)), capsys)
    assert code == 2 and str(bad) in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_existing_output_needs_overwrite(explained, tiny_model, synthetic_case, capsys):
    out = explained["out"]
    before = (out / "explain.json").read_text()
    code, _, err = run_cli(_args(synthetic_case, explained["event"], tiny_model, out), capsys)
    assert code == 2 and "--overwrite" in err
    assert (out / "explain.json").read_text() == before


@pytest.mark.parametrize("bad", ["missing_dose", "channels", "cube", "one_t1"])
def test_bad_input_exits_2_and_writes_nothing(bad, tiny_model, synthetic_case, tmp_path,
                                               capsys):
    out = tmp_path / "out"
    case = dict(synthetic_case)
    extra: list[str] = []
    if bad == "missing_dose":
        case["dose"] = tmp_path / "no_such_dose.nii.gz"
    elif bad == "channels":
        extra = ["--channels", "some"]
    elif bad == "cube":
        extra = ["--cube-mm", "0"]
    args = _args(case, case["event"], tiny_model, out, *extra)
    if bad == "one_t1":
        args = args[:1] + args[3:]  # drop the first --t1
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in err
    assert sum(line.startswith("error") for line in lines) == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_out_holding_the_dose_frame_is_refused_and_the_frame_kept(tiny_model, synthetic_case,
                                                                   tmp_path, capsys):
    """The issue's data loss: --out <the --dose-frame's folder> --overwrite deleted the frame."""
    import shutil

    frames = tmp_path / "planning"
    frames.mkdir()
    frame = frames / "planning_mr.nii.gz"
    shutil.copy(synthetic_case["post_op"], frame)
    args = _args(synthetic_case, synthetic_case["event"], tiny_model, frames,
                 "--dose-frame", str(frame), "--overwrite")
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "holds an input" in err and str(frame) in err
    assert frame.read_bytes() == synthetic_case["post_op"].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["planning"]


@pytest.mark.slow
def test_qa_failure_writes_explain_json_without_a_label_and_exits_3(tiny_model, synthetic_case,
                                                                    tmp_path, capsys):
    low = tmp_path / "low_dose.nii.gz"  # peaks at ~1.8 Gy: no brain RT plan does that
    sitk.WriteImage(sitk.ReadImage(str(synthetic_case["dose"])) * 0.03, str(low))
    out = tmp_path / "out"
    code, _, err = run_cli(_args({**synthetic_case, "dose": low}, synthetic_case["event"],
                                 tiny_model, out), capsys)
    assert code == 3, err
    assert [p.name for p in out.iterdir()] == ["explain.json"]  # no maps of a refused case
    rec = json.loads((out / "explain.json").read_text())
    assert rec["label"] is None and rec["qa"]["verdict"] == "fail"
    assert rec["inputs"]["dose"] == str(low) and rec["model"]["name"] == "ricenet-test"
    assert "QA failed, no label" in " ".join(err.split())
