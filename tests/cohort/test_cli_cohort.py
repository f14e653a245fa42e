"""`ricecli cohort` on a realistic DICOM export: every choice against the tree's truth, the
outputs, incremental re-runs, --jobs, the layouts, labels, refusals, and batch on its manifest."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from cohort_tree import build_tree, write_labels_csv
from model_fixtures import run_cli
from tiny_dicom import write_series

from ricecli.batch import case_inputs
from ricecli.io.manifest import read_manifest
from ricecli.prepare import read_frame_transform

COLUMNS = ["case_id", "patient_id", "post_op", "event", "dose", "dose_frame",
           "dose_frame_transform", "label", "split", "post_op_date", "event_date"]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cohort(tree: Path, out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return run_cli(["cohort", str(tree), "--out", str(out), *extra], capsys)


def check_against_truth(truth, out: Path) -> None:
    """Every case, dose, frame, transform and skip code as the tree's truth says."""
    manifest = rows(out / "manifest.csv")
    details = json.loads((out / "cases.json").read_text())["cases"]
    skipped = rows(out / "skipped.csv")
    assert list(manifest[0]) == COLUMNS
    for pid, p in truth.patients.items():
        mine = [d for d in details if d["patient_id"] == pid]
        if p.no_case_reason is not None:
            assert not mine
            assert any(r["what"] == "patient" and r["patient_id"] == pid and
                       r["code"] == p.no_case_reason for r in skipped)
            continue
        assert {d["post_op_series_uid"] for d in mine} == {p.post_op_series_uid}
        assert [d["event_series_uid"] for d in mine] == list(p.event_series_uids)
        assert [d["event_date"].replace("-", "") for d in mine] == list(p.event_dates)
        assert len({d["split"] for d in mine}) == 1  # a patient lies in one fold
        d = mine[0]
        sops = {str(pydicom.dcmread(truth.root / f, stop_before_pixels=True).SOPInstanceUID)
                for f in d["dose_files"]}
        if p.dose_sop_uid is not None:
            assert sops == {p.dose_sop_uid} and d["dose_summation"] == "PLAN"
        else:  # partial doses summed into COHORT_DIR/doses/
            assert sops == set(p.beam_dose_sop_uids) and d["dose"].startswith("doses/")
        assert (d["dose_frame_series_uid"] or None) == p.dose_frame_series_uid
        if p.reg_matrix is None:
            assert d["dose_frame_transform"] == ""
        else:  # the REG maps dose-frame points to MR points; prepare wants MR -> dose frame
            given = read_frame_transform(out / d["dose_frame_transform"])
            np.testing.assert_allclose(given, np.linalg.inv(np.reshape(p.reg_matrix, (4, 4))),
                                       atol=1e-6)
        for key, code in p.skip_codes.items():
            assert any(code == r["code"] and key in (r["series_uid"], r["path"])
                       for r in skipped), (pid, key, code)
    for broken in truth.broken_files:
        rel = broken.relative_to(truth.root).as_posix()
        assert any(r["path"] == rel and r["code"] in ("unreadable", "not_dicom")
                   for r in skipped), rel


def test_cohort_on_an_nbia_export(nbia_tree, tmp_path, capsys):
    out = tmp_path / "cohort"
    code, text, err = cohort(nbia_tree.root, out, capsys)
    assert code == 0, err
    check_against_truth(nbia_tree, out)
    cases = read_manifest(out / "manifest.csv")  # ricecli's own reader: every path exists
    assert cases and all(p.exists() for c in cases for p in c.paths())
    assert all(c.split in {f"fold{k}" for k in range(5)} for c in cases)
    with_tfm = [c for c in cases if c.dose_frame_transform is not None]
    assert with_tfm and case_inputs(with_tfm[0]).dose_frame_transform == \
        with_tfm[0].dose_frame_transform
    page = (out / "review.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 * len(cases)
    assert all(c.case_id in page for c in cases) and "tie" in page
    assert f"{len(cases)} cases" in " ".join(text.split())


def test_rerun_reads_only_new_files_and_jobs_change_nothing(nbia_tree, tmp_path, capsys):
    tree = tmp_path / "tree"
    shutil.copytree(nbia_tree.root, tree, symlinks=True)
    out, out2 = tmp_path / "a", tmp_path / "b"
    assert cohort(tree, out, capsys)[0] == 0
    first = {n: (out / n).read_bytes() for n in ("manifest.csv", "skipped.csv", "cases.json")}
    code, text, _ = cohort(tree, out, capsys)
    assert code == 0 and f"{nbia_tree.n_files} files, 0 read" in " ".join(text.split())
    assert first == {n: (out / n).read_bytes() for n in first}
    (tree / "extra").mkdir()
    (tree / "extra" / "README").write_text("new file")
    code, text, _ = cohort(tree, out, capsys, "--jobs", "2")
    assert code == 0 and ", 1 read" in " ".join(text.split())
    assert cohort(tree, out2, capsys, "--jobs", "2")[0] == 0
    for name in ("manifest.csv", "skipped.csv", "cases.json"):
        assert (out / name).read_bytes() == (out2 / name).read_bytes(), name


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["flat", "one_per_folder"])
def test_other_layouts_give_the_same_cases(layout, tmp_path, capsys):
    truth = build_tree(tmp_path / "tree", layout)
    out = tmp_path / "cohort"
    assert cohort(truth.root, out, capsys)[0] == 0
    check_against_truth(truth, out)
    assert all(p.exists() for c in read_manifest(out / "manifest.csv") for p in c.paths())


def test_labels_and_label_map(nbia_tree, tmp_path, capsys):
    labels = write_labels_csv(nbia_tree, tmp_path / "labels.csv",
                              extra_rows=[("Burdenko-GBM-001", "7", "progression"),
                                          ("nobody", "1", "progression")])
    out = tmp_path / "cohort"
    code, _, err = cohort(nbia_tree.root, out, capsys, "--labels", str(labels), "--label-map",
                          "progression=recurrence,pseudoprogression=RICE")
    assert code == 0, err
    given = rows(labels)[:-2]
    manifest = {(r["patient_id"], r["event_date"].replace("-", "")): r["label"]
                for r in rows(out / "manifest.csv")}
    words = {"progression": "recurrence", "pseudoprogression": "RICE"}
    assert manifest == {(r["patient_id"], r["event_date"]): words[r["label"]]
                        for r in given if r["label"] in words}
    codes = [r["code"] for r in rows(out / "skipped.csv") if r["what"] == "label"]
    assert codes.count("unknown_label") == sum(r["label"] == "response" for r in given)
    assert codes.count("label_unmatched") == 2
    from train.data import read_manifest as train_manifest  # torch-free

    records = train_manifest(out / "manifest.csv")  # python -m train fit reads it unchanged
    assert len(records) == len(manifest) and {r.split for r in records} == {"cv"}
    assert any(r.dose_frame_transform for r in records)


def test_refusals_exit_2_and_write_nothing(tmp_path, capsys):
    tree = tmp_path / "tree"
    write_series(tree / "s", slices=6, SeriesDescription="T1C")  # no dose: no case
    out = tmp_path / "out"
    code, _, err = cohort(tree, out, capsys)
    assert code == 2 and "no case formed" in err and "no_dose" in err and not out.exists()
    code, _, err = cohort(tree, tree / "cohort", capsys)
    assert code == 2 and "inside" in err
    (out / "x").mkdir(parents=True)
    code, _, err = cohort(tree, out, capsys)
    assert code == 2 and "holds no earlier cohort run" in err
    code, _, err = cohort(tree, tmp_path / "o2", capsys, "--label-map", "progression")
    assert code == 2 and "label-map" in err and err.count("\n") == 1


def test_odd_files_are_listed_not_crashed_on(tmp_path, capsys):
    """pydicom's own test files (odd encodings, broken, deflated, big-endian, no preamble):
    no case, so exit 2 with one line, and never an internal error or a warning."""
    data = Path(pydicom.data.__file__).parent / "test_files"
    code, _, err = cohort(data, tmp_path / "out", capsys)
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1, err


def test_rerun_keeps_a_users_files(nbia_tree, tmp_path, capsys):
    out = tmp_path / "cohort"
    assert cohort(nbia_tree.root, out, capsys)[0] == 0
    (out / "results.csv").write_text("mine")
    code, _, err = cohort(nbia_tree.root, out, capsys)
    assert code == 2 and "results.csv" in err and (out / "results.csv").read_text() == "mine"


@pytest.mark.slow
def test_batch_and_prepare_run_on_the_produced_manifest(nbia_tree, tmp_path, capsys):
    """The shipped model on a produced case with a summed BEAM dose and a registered planning-CT
    frame (tiny volumes may fail QA: exit 3, but no case may end in an error); prepare on a case
    with a REG transform uses it instead of registering."""
    out = tmp_path / "cohort"
    assert cohort(nbia_tree.root, out, capsys)[0] == 0
    manifest = rows(out / "manifest.csv")
    summed = next(r for r in manifest if r["dose"].startswith("doses/") and r["dose_frame"])
    subset = out / "subset.csv"
    with open(subset, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerow(summed)
    results = tmp_path / "results.csv"
    code, _, err = run_cli(["batch", str(subset), "--out", str(results), "--device", "cpu"],
                           capsys)
    assert code in (0, 3), err
    got = rows(results)
    assert [r["case_id"] for r in got] == [summed["case_id"]]
    assert got[0]["status"] in ("ok", "qa_fail") and not got[0]["error"], got

    reg = next(c for c in read_manifest(out / "manifest.csv") if c.dose_frame_transform)
    code, _, err = run_cli(["prepare", "--t1", str(reg.post_op), "--t1", str(reg.event),
                            "--dose", str(reg.dose), "--dose-frame", str(reg.dose_frame),
                            "--dose-frame-transform", str(reg.dose_frame_transform),
                            "--out", str(tmp_path / "prepared")], capsys)
    assert code in (0, 3), err
    qa = json.loads((tmp_path / "prepared" / "qa.json").read_text())
    assert qa["dose"]["frame_alignment"] == "given transform"
    assert "dose_frame_to_post_op" not in qa["registration"]
    assert qa["dose"]["coverage_of_brain"] > 0.9
