"""Header-reading throughput of `ricecli cohort` (issue 20: >= 2,000 files/s on 2 cores).

Builds a tree of N small MR DICOM files (64x64 int16 slices, ~100-element headers with a
private block, 100 slices per series folder) in a temp folder, then times ricecli.cohort.index
interleaved (A B C, A B C, ...): cold with --jobs 1, cold with --jobs 2 (every header read; the
files sit in the OS page cache, as after a download), and the incremental re-run (nothing new:
only stat calls), plus a grown tree (10% new files). Prints one JSON line and with --out writes it.

    python benchmarks/cohort_index.py [--files 6000] [--repeat 3] \
        [--out benchmarks/results/cohort_index.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ricecli.cohort.index import index_tree
from ricecli.io.files import write_text_atomic


def template() -> Dataset:
    """One MR slice header like a scanner's (~100 elements, a private block) and 8 KB pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20110314"
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.Modality, ds.Manufacturer = "MR", "SIEMENS"
    ds.InstitutionName, ds.StationName = "Clinic", "MRC1"
    ds.StudyDescription, ds.SeriesDescription = "MRT Kopf", "t1_mprage_post KM"
    ds.ProtocolName = "t1_mprage_sag_p2_iso KM"
    ds.PatientName, ds.PatientSex, ds.PatientAge = "Anon", "M", "061Y"
    ds.ContrastBolusAgent, ds.ScanningSequence = "Gadovist", ["GR", "IR"]
    ds.SequenceVariant, ds.ScanOptions = ["SK", "SP", "MP"], "IR"
    ds.MRAcquisitionType, ds.SequenceName = "3D", "*tfl3d1_16ns"
    ds.SliceThickness, ds.RepetitionTime, ds.EchoTime = "1", "2300", "2.98"
    ds.InversionTime, ds.NumberOfAverages, ds.ImagingFrequency = "900", "1", "123.2"
    ds.MagneticFieldStrength, ds.EchoTrainLength, ds.FlipAngle = "3", "1", "9"
    ds.SoftwareVersions, ds.PatientPosition = "syngo MR E11", "HFS"
    ds.PixelSpacing, ds.ImageOrientationPatient = [1, 1], [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = generate_uid()
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = "300", "600"
    block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
    block.add_new(0x10, "OB", bytes(2000))  # a CSA-like private blob
    ds.PixelData = (np.arange(64 * 64, dtype="<u2") % 4096).tobytes()
    return ds


def build(root: Path, files: int, start: int = 0) -> None:
    """`files` slices, 100 per series folder, patients of 5 series."""
    ds = template()
    for k in range(start, start + files):
        series, slice_ = divmod(k, 100)
        if slice_ == 0 or k == start:
            ds.PatientID = f"P{series // 5:04d}"
            ds.StudyInstanceUID = generate_uid(entropy_srcs=[ds.PatientID])
            ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(series)])
            folder = root / ds.PatientID / f"{series % 5}-t1_mprage_post KM"
            folder.mkdir(parents=True, exist_ok=True)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber, ds.ImagePositionPatient = slice_ + 1, [0, 0, slice_]
        ds.save_as(folder / f"1-{slice_ + 1:03d}.dcm", enforce_file_format=True)


def machine() -> dict:
    """CPU model, core count and the versions a figure depends on."""
    info = {"cpu_model": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    for dist in ("pydicom", "numpy", "ricecli"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        t0 = time.perf_counter()
        build(root, args.files)
        build_s = time.perf_counter() - t0
        rates: dict[str, list[float]] = {"cold_jobs1": [], "cold_jobs2": [], "incremental": []}
        previous = index_tree(root, {}, 2).entries
        by_path = {e["path"]: e for e in previous}
        for _ in range(args.repeat):  # interleaved
            for name, jobs, prior in (("cold_jobs1", 1, {}), ("cold_jobs2", 2, {}),
                                      ("incremental", 1, by_path)):
                t0 = time.perf_counter()
                run = index_tree(root, prior, jobs)
                rates[name].append(len(run.entries) / (time.perf_counter() - t0))
                assert len(run.entries) == args.files
        build(root, args.files // 10, start=args.files)
        t0 = time.perf_counter()
        grown = index_tree(root, by_path, 2)
        grown_s = time.perf_counter() - t0
    result = {
        "what": "ricecli cohort header index: files/s (median of interleaved repeats)",
        "files": args.files, "file_bytes": (64 * 64 * 2) + 3000, "repeat": args.repeat,
        "build_seconds": round(build_s, 1),
        **{name: round(statistics.median(v), 0) for name, v in rates.items()},
        "all_runs": {name: [round(r) for r in v] for name, v in rates.items()},
        "grown_tree": {"new_files": grown.read, "reused": grown.reused,
                       "seconds": round(grown_s, 3)},
        "machine": info,
    }
    line = json.dumps(result)
    print(line)
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
