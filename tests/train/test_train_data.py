"""Manifest, cache keys, cached arrays, folds."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest

from ricecli.errors import InputError
from ricecli.spec import preset_spec
from train.data import cache_file, load_cohort, prepare_cohort, read_manifest
from train.folds import make_folds, split_indices


def test_manifest_rows_and_bad_manifests(tmp_path, cohort):
    manifest, _ = cohort
    recs = read_manifest(manifest)
    assert len(recs) == 32 and Counter(r.split for r in recs) == {"cv": 24, "test": 8}
    assert {r.label for r in recs} == {0, 1} and os.path.isabs(recs[0].post_op)
    bad = tmp_path / "m.csv"
    bad.write_text("case_id,post_op,event,label\na,x,y,RICE\n")
    with pytest.raises(InputError, match="lacks column"):
        read_manifest(bad)
    bad.write_text("case_id,post_op,event,dose,label\na,x,y,z,maybe\n")
    with pytest.raises(InputError, match="label"):
        read_manifest(bad)


def test_cache_key_follows_spec_and_file_identity(cohort):
    manifest, cache = cohort
    rec = read_manifest(manifest)[0]
    edge = preset_spec("edge")
    assert cache_file(rec, edge, cache) == cache_file(rec, edge.with_channels(("dose",)), cache)
    assert cache_file(rec, edge, cache) != cache_file(rec, preset_spec("paper"), cache)
    before = cache_file(rec, edge, cache)
    st = os.stat(rec.dose)
    os.utime(rec.dose, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert cache_file(rec, edge, cache) != before
    finally:
        os.utime(rec.dose, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cached_cases_are_not_prepared_again_and_load_in_channel_order(cohort):
    from train.fit import FitConfig, run_spec
    from train.synthetic import SMALL_GRID as GRID

    manifest, cache = cohort
    recs = read_manifest(manifest)[:4]
    spec = run_spec(FitConfig(manifest="", out="", channels=("dose", "event"), **GRID))
    stats = prepare_cohort(recs, spec, cache, workers=1)
    assert stats["prepared"] == 0 and stats["cached"] == 4
    data = load_cohort(recs, spec, cache, workers=2)
    assert data.x.shape == (4, 2, 16, 16, 16) and data.x.dtype == np.float16
    with np.load(cache_file(recs[0], spec, cache)) as z:
        np.testing.assert_allclose(data.x[0, 0], z["dose"], atol=2e-3)
        np.testing.assert_allclose(data.x[0, 1], z["event"], atol=1e-2)


def test_folds_fixed_by_seed_stratified_and_patient_level(cohort, tmp_path):
    manifest, _ = cohort
    recs = read_manifest(manifest)
    a, b, c = make_folds(recs, 3, seed=7), make_folds(recs, 3, seed=7), make_folds(recs, 3, 8)
    assert a == b and a != c
    cv = [r for r in recs if r.split == "cv"]
    assert sorted(x for v in a["val"] for x in v) == sorted(r.case_id for r in cv)
    label = {r.case_id: r.label for r in cv}
    for k in range(3):
        assert Counter(label[x] for x in a["val"][k]) == {0: 4, 1: 4}  # 12 + 12 dealt evenly
        train, val = split_indices(recs, a, k)
        assert not {recs[i].case_id for i in train} & {recs[i].case_id for i in val}
        assert all(recs[i].split == "cv" for i in train)
    # Two cases of one patient always land in the same fold.
    grouped = [r.__class__(**{**r.__dict__, "patient_id": "p0"}) if r.case_id in (
        "case0000", "case0005") else r for r in recs]
    f = make_folds(grouped, 3, seed=7)
    assert [k for k, v in enumerate(f["val"]) if "case0000" in v] == [
        k for k, v in enumerate(f["val"]) if "case0005" in v]


def _frame_manifest(root):
    """root/cohort/manifest.csv of one case with a relative dose_frame (tiny real files)."""
    cohort = root / "cohort"
    (cohort / "frames").mkdir(parents=True)
    for name in ("p.nii", "e.nii", "d.nii", "frames/t1.nii"):
        (cohort / name).write_bytes(b"scan " + name.encode())
    manifest = cohort / "manifest.csv"
    manifest.write_text("case_id,post_op,event,dose,label,dose_frame\n"
                        "c1,p.nii,e.nii,d.nii,RICE,frames/t1.nii\n")
    return manifest


def test_relative_dose_frame_is_resolved_against_the_manifest_folder(tmp_path, monkeypatch):
    manifest = _frame_manifest(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rec = read_manifest(os.path.relpath(manifest, elsewhere))[0]
    assert rec.dose_frame == str(manifest.parent.resolve() / "frames" / "t1.nii")
    assert os.path.isabs(rec.post_op) and rec.label == 0 and rec.split == "cv"


def test_cache_key_follows_the_dose_frame_file(tmp_path):
    manifest = _frame_manifest(tmp_path)
    rec, spec = read_manifest(manifest)[0], preset_spec("edge")
    before = cache_file(rec, spec, tmp_path / "cache")
    (manifest.parent / "frames" / "t1.nii").write_bytes(b"another scan, another size")
    assert cache_file(rec, spec, tmp_path / "cache") != before
