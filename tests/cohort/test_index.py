"""ricecli.cohort.index: header facts, skip codes, the incremental index, --jobs."""

from __future__ import annotations

import os

from tiny_dicom import write_series, write_slice

from ricecli.cohort.index import index_tree, load_index, read_entry, save_index


def test_header_facts_and_skip_codes(tmp_path):
    write_slice(tmp_path / "a" / "x.dcm", SeriesDescription="T1 KM", PatientID="",
                ContrastBolusAgent="Gadovist", RepetitionTime="550.0")
    (tmp_path / "notes.txt").write_text("not a DICOM file")
    good = (tmp_path / "a" / "x.dcm").read_bytes()
    (tmp_path / "head.dcm").write_bytes(good[:300])  # cut inside the header
    (tmp_path / "half.dcm").write_bytes(good[:-40])  # cut inside the pixel data
    (tmp_path / "noext").write_bytes(good)  # no preamble check by suffix: still DICOM

    facts = read_entry(str(tmp_path), "a/x.dcm")["facts"]
    assert facts["SeriesDescription"] == "T1 KM" and facts["ContrastBolusAgent"] == "Gadovist"
    assert [float(v) for v in facts["ImageOrientationPatient"]] == [1, 0, 0, 0, 1, 0]
    assert facts["Rows"] == "8" and facts["RepetitionTime"] == "550.0"
    assert "PatientID" not in facts  # empty values are left out
    codes = {rel: read_entry(str(tmp_path), rel).get("skip")
             for rel in ("notes.txt", "head.dcm", "half.dcm", "noext")}
    assert codes == {"notes.txt": "not_dicom", "head.dcm": "unreadable",
                     "half.dcm": "unreadable", "noext": None}
    assert "truncated" in read_entry(str(tmp_path), "half.dcm")["reason"]


def test_incremental_index_reads_only_new_and_changed_files(tmp_path):
    tree, index_file = tmp_path / "tree", tmp_path / "out" / ".index.jsonl"
    files = write_series(tree / "s1", slices=5, SeriesDescription="T2")
    first = index_tree(tree, load_index(index_file, tree))
    assert (first.read, first.reused) == (5, 0)
    save_index(index_file, tree, first)
    again = index_tree(tree, load_index(index_file, tree))
    assert (again.read, again.reused) == (0, 5) and again.entries == first.entries
    write_series(tree / "s2", slices=3, SeriesDescription="FLAIR")
    os.utime(files[0], ns=(1, 1))  # a changed mtime: read again
    grown = index_tree(tree, load_index(index_file, tree))
    assert (grown.read, grown.reused) == (4, 4)
    assert [e["path"] for e in grown.entries] == sorted(e["path"] for e in grown.entries)
    assert load_index(index_file, tmp_path) == {}  # another tree's index: not used
    index_file.write_text("garbage\n")  # a damaged index reads as empty: all files again
    assert index_tree(tree, load_index(index_file, tree)).read == 8


def test_jobs_give_the_same_entries(tmp_path):
    for k in range(3):
        write_series(tmp_path / f"s{k}", slices=30, SeriesDescription=f"S{k}")
    one = index_tree(tmp_path, {}, jobs=1)
    two = index_tree(tmp_path, {}, jobs=2)
    assert one.entries == two.entries and len(one.entries) == 90
