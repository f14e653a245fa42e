"""ricecli.io.manifest: the one manifest parser of `ricecli batch` and `train/`."""

from __future__ import annotations

import pytest
from manifest_fixtures import write_manifest

from ricecli.errors import InputError
from ricecli.io.files import input_paths
from ricecli.io.manifest import read_manifest


def test_read_manifest_resolves_relative_paths(tmp_path):
    sub = tmp_path / "cohort"
    sub.mkdir()
    path = write_manifest(sub, [("c1", "a/post.nii.gz", "a/event.nii.gz", "/abs/dose.dcm", "RICE"),
                           ("c2", "p.nrrd", "e.nrrd", "d.nrrd", "")],
                     header=("case_id", "post_op", "event", "dose", "label"))
    cases = read_manifest(path)
    assert [c.case_id for c in cases] == ["c1", "c2"] and [c.index for c in cases] == [0, 1]
    assert cases[0].post_op == sub.resolve() / "a" / "post.nii.gz"
    assert str(cases[0].dose) == "/abs/dose.dcm"
    assert cases[0].label == "RICE" and cases[1].label is None


def test_manifest_dose_options(tmp_path):
    path = write_manifest(tmp_path, [("c1", "p", "e", "d", "cGy", "30", "")],
                     header=("case_id", "post_op", "event", "dose", "dose_unit",
                             "dose_fractions", "dose_relative_scale_gy"))
    case = read_manifest(path)[0]
    assert (case.dose_unit, case.dose_fractions, case.dose_relative_scale_gy) == ("cGy", 30, None)


@pytest.mark.parametrize("rows,header,match", [
    ([("c1", "p", "e", "d")], ("case_id", "post_op", "event"), "lacks columns"),
    ([("c1", "p", "e", "d"), ("c1", "p", "e", "d")], ("case_id", "post_op", "event", "dose"),
     "repeated"),
    ([("c1", "p", "", "d")], ("case_id", "post_op", "event", "dose"), "event is empty"),
    ([("c1", "p", "e", "d", "x")], ("case_id", "post_op", "event", "dose", "dose_fractions"),
     "row 2"),
])
def test_bad_manifests(tmp_path, rows, header, match):
    with pytest.raises(InputError, match=match):
        read_manifest(write_manifest(tmp_path, rows, header))


def test_missing_manifest(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")


def test_non_utf8_manifest_is_refused_with_a_fix(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_bytes("case_id,post_op,event,dose\nfü,a,b,c\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8") as err:
        read_manifest(path)
    assert "Fix: save the manifest as a UTF-8 CSV" in err.value.one_line()


def test_every_path_column_is_resolved_against_the_manifest_folder_from_any_cwd(
        tmp_path, monkeypatch):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    write_manifest(cohort,
                   [("c1", "p.nii", "e.nii", "d.dcm", "m.nii", "frames/t1.nii", "P7", "test")],
                   header=("case_id", "post_op", "event", "dose", "mask", "dose_frame",
                           "patient_id", "split"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    case = read_manifest("../cohort/manifest.csv")[0]
    base = cohort.resolve()
    assert case.dose_frame == base / "frames" / "t1.nii" and case.mask == base / "m.nii"
    assert case.paths() == [base / "p.nii", base / "e.nii", base / "d.dcm", base / "m.nii",
                            base / "frames" / "t1.nii"]
    assert (case.patient_id, case.split, case.label) == ("P7", "test", None)
    # batch's output checks see the dose_frame as an input too
    got = input_paths(manifest="../cohort/manifest.csv", cases=[case])
    assert base / "frames" / "t1.nii" in got


def test_training_requires_the_label_column(tmp_path):
    path = write_manifest(tmp_path, [("c1", "p", "e", "d")],
                          ("case_id", "post_op", "event", "dose"))
    assert read_manifest(path)[0].label is None
    with pytest.raises(InputError, match="lacks columns \\['label'\\]") as err:
        read_manifest(path, also_required=("label",))
    assert "columns case_id, post_op, event, dose, label (dose_unit" in err.value.one_line()


def test_unknown_columns_are_refused_naming_them_and_the_known_ones(tmp_path):
    path = write_manifest(tmp_path, [("c1", "p", "e", "d", "m.nii.gz", "x")],
                          header=("case_id", "post_op", "event", "dose", "brain_mask", "notes"))
    with pytest.raises(InputError) as err:
        read_manifest(path)
    line = err.value.one_line()
    assert line.startswith(f"{path}: manifest has unknown columns 'brain_mask', 'notes'. Fix: "
                           "rename or remove them; the input columns are case_id, post_op, "
                           "event, dose, label, mask, dose_unit")
    assert "dose_frame_transform, patient_id, split, post_op_date, event_date" in line


def test_what_simulate_and_cohort_write_is_read(tmp_path):
    """Every column `ricecli simulate` writes is known, and its brain mask is the `mask` batch
    and train read; the columns `ricecli cohort` adds are known too."""
    from ricecli.simulate.cohort import MANIFEST_COLUMNS

    row = {c: "" for c in MANIFEST_COLUMNS}
    row.update(case_id="c1", post_op="p.nii.gz", event="e.nii.gz", dose="d.nii.gz",
               mask="cases/c1/event_brain_mask.nii.gz", label="RICE", dose_unit="Gy")
    path = write_manifest(tmp_path, [tuple(row.values())], header=tuple(row))
    (case,) = read_manifest(path)
    assert case.mask == (tmp_path / "cases" / "c1" / "event_brain_mask.nii.gz").resolve()
    cohort = ("case_id", "patient_id", "post_op", "event", "dose", "dose_frame",
              "dose_frame_transform", "label", "split", "post_op_date", "event_date")
    (tmp_path / "cohort").mkdir()
    path = write_manifest(tmp_path / "cohort", [("c1", "P1", "p", "e", "d", "", "", "", "cv",
                                                 "20250101", "20250601")], header=cohort)
    assert read_manifest(path)[0].patient_id == "P1"
