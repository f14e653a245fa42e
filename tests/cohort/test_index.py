"""ricecli.cohort.index: header facts, skip codes, the incremental index, --jobs."""

from __future__ import annotations

import os
import struct

from tiny_dicom import write_series, write_slice

from ricecli.cohort.facts import SCAN_TAGS, SEQUENCE_TAG_NUMBERS
from ricecli.cohort.index import index_text, index_tree, load_index, read_entry
from ricecli.cohort.scan import scan_header


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
    index_file.parent.mkdir()
    index_file.write_text(index_text(tree, first.entries))  # as cohort/write.py writes it
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


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def test_scan_gives_up_to_pydicom_when_unsure(tmp_path):
    """Implicit-VR data under an explicit-VR transfer syntax (a common export bug): the scan
    sees no VR and lets pydicom read it; a folder where a file was expected: unreadable."""
    syntax = b"1.2.840.10008.1.2.1\x00"
    meta = _element(2, 0x10, b"UI", syntax)
    meta = _element(2, 0, b"UL", struct.pack("<I", len(meta))) + meta
    body = b"".join(struct.pack("<HHI", g, e, len(v)) + v for g, e, v in (
        (8, 0x16, b"1.2.840.10008.5.1.4.1.1.4\x00"), (8, 0x18, b"1.2.3.4\x00"),
        (8, 0x60, b"MR"), (0x10, 0x20, b"P1")))
    data = b"\x00" * 128 + b"DICM" + meta + body
    assert scan_header(data, SCAN_TAGS, SEQUENCE_TAG_NUMBERS) is None
    (tmp_path / "implicit.dcm").write_bytes(data)
    facts = read_entry(str(tmp_path), "implicit.dcm")["facts"]
    assert facts["Modality"] == "MR" and facts["SOPInstanceUID"] == "1.2.3.4"
    (tmp_path / "folder.dcm").mkdir()
    assert read_entry(str(tmp_path), "folder.dcm")["skip"] == "unreadable"
