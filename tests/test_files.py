"""Output folders and files: staged, renamed on success, never over or inside an input."""

from __future__ import annotations

import pytest

from ricecli.errors import OutputError
from ricecli.io.files import (
    check_output_dir,
    staged_output,
    write_atomic,
    write_bytes_atomic,
    write_text_atomic,
)


def test_staged_output_appears_only_on_success(tmp_path):
    out = tmp_path / "out"
    with staged_output(out) as stage:
        (stage / "a.txt").write_text("x")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "x"
    with pytest.raises(RuntimeError), staged_output(tmp_path / "failed") as stage:
        (stage / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_non_empty_folder_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputError, match="not empty"), staged_output(out):
        pass
    with staged_output(out, overwrite=True) as stage:
        (stage / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_output(empty) as stage:
        (stage / "f").write_text("")
    assert (empty / "f").exists()


def test_refuses_output_that_is_in_or_holds_an_input(tmp_path):
    dicom_dir = tmp_path / "series"
    dicom_dir.mkdir()
    (dicom_dir / "1.dcm").write_bytes(b"x")
    for out in (dicom_dir, dicom_dir / "out"):
        with pytest.raises(OutputError, match="input"), staged_output(out, [dicom_dir], True):
            pass
    with pytest.raises(OutputError, match="holds an input"), staged_output(
            tmp_path, [dicom_dir / "1.dcm"], overwrite=True):
        pass
    assert (dicom_dir / "1.dcm").read_bytes() == b"x"


def test_write_atomic_keeps_extension_and_cleans_up(tmp_path):
    target = tmp_path / "report.nii.gz"
    with write_atomic(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_text("done")
    assert target.read_text() == "done"
    with pytest.raises(ValueError), write_atomic(target) as tmp:
        tmp.write_text("half")
        raise ValueError
    assert target.read_text() == "done" and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(OutputError), write_atomic(target, inputs=[target]):
        pass


def test_text_and_bytes_writers_replace_whole_files_and_refuse_inputs(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    assert write_text_atomic(target, "{}\n") == target.resolve()
    assert write_bytes_atomic(target, b"\x00plan") == target.resolve()
    assert target.read_bytes() == b"\x00plan" and sorted(p.name for p in target.parent.iterdir()) \
        == ["metrics.json"]
    with pytest.raises(OutputError, match="--overwrite"):
        write_text_atomic(target, "new", overwrite=False)
    with pytest.raises(OutputError, match="input"):
        write_bytes_atomic(target, b"x", inputs=[target])
    assert target.read_bytes() == b"\x00plan"


def test_write_atomic_gives_the_usual_file_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644  # not 0600


def test_input_paths_knows_every_input_of_a_command(tmp_path):
    from ricecli.io.files import input_paths
    from ricecli.prepare import CaseInputs

    case = CaseInputs(post_op=tmp_path / "p.nii", event=tmp_path / "e.nii", dose=tmp_path / "d",
                      mask=tmp_path / "m.nii", dose_frame=tmp_path / "f.nii")
    got = {p.name for p in input_paths(case, model=tmp_path / "x.onnx",
                                       manifest=tmp_path / "c.csv")}
    assert got == {"p.nii", "e.nii", "d", "m.nii", "f.nii", "x.onnx", "c.csv"}


def test_output_file_rules(tmp_path):
    from ricecli.io.files import check_output_file

    series = tmp_path / "series"
    series.mkdir()
    with pytest.raises(OutputError, match="lies inside one"):
        check_output_file(series / "r.json", [series])
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    with pytest.raises(OutputError, match="--overwrite"):
        check_output_file(existing, [], overwrite=False)
    assert check_output_file(existing, [], overwrite=True) == existing.resolve()


def test_output_under_a_file_is_refused_with_a_fix(tmp_path):
    from ricecli.io.files import check_output_file

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    with pytest.raises(OutputError, match="which is a file, not a folder") as err:
        check_output_dir(plain / "out", [], overwrite=False)
    assert "Fix:" in err.value.one_line()
    with pytest.raises(OutputError, match="which is a file"):
        check_output_file(plain / "sub" / "r.json")
    assert plain.read_text() == "x"


def test_interrupt_swallowed_by_native_code_stops_the_commit(tmp_path, monkeypatch):
    import signal

    from ricecli import signals as errors

    monkeypatch.setattr(errors, "_PENDING", [int(signal.SIGTERM)])
    with pytest.raises(errors.Interrupted), staged_output(tmp_path / "out") as stage:
        (stage / "a.txt").write_text("x")
    with pytest.raises(errors.Interrupted), write_atomic(tmp_path / "r.json") as tmp:
        tmp.write_text("{}")
    assert list(tmp_path.iterdir()) == []
