"""ricecli.batch(_results) and `ricecli batch`: shards, resume, failing cases, parallel jobs."""

from __future__ import annotations

import csv
import json

import pytest
from manifest_fixtures import write_manifest
from model_fixtures import run_cli

from ricecli.batch import parse_shard, select_shard
from ricecli.batch_results import (
    RESULT_COLUMNS,
    ResultsWriter,
    finished_cases,
    read_results,
    summarise,
    summary_line,
)
from ricecli.errors import OutputError, RicenetError
from ricecli.inference.model import load_model
from ricecli.io.manifest import read_manifest


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_shards_are_disjoint_and_complete(tmp_path):
    rows = [(f"c{i}", "p", "e", "d", "") for i in range(10)]
    cases = read_manifest(write_manifest(tmp_path, rows))
    shards = [select_shard(cases, parse_shard(f"{i}/3")) for i in range(3)]
    ids = [c.case_id for s in shards for c in s]
    assert sorted(ids) == sorted(c.case_id for c in cases) and len(set(ids)) == 10
    assert [c.case_id for c in shards[1]] == ["c1", "c4", "c7"]
    assert parse_shard(None) == (0, 1)
    for bad in ("3/3", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(RicenetError, match="--shard"):
            parse_shard(bad)


def test_results_writer_appends_and_resumes(tmp_path):
    out = tmp_path / "results.csv"
    writer = ResultsWriter(out)
    writer.append({"case_id": "a", "status": "ok", "label": "RICE"})
    writer.append({"case_id": "b", "status": "error", "error": "bad, with comma"})
    with open(out, "a") as f:  # a writer killed mid-row
        f.write("c,o")
    writer.append({"case_id": "d", "status": "ok"})
    rows = _rows(out)
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert [r["case_id"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[1]["error"] == "bad, with comma" and rows[2]["status"] in ("o", None)
    assert finished_cases(out) == {"a", "b", "d"}
    assert finished_cases(out, retry_failed=True) == {"a", "d"}


def _append_rows(path, shard: int, n: int) -> None:
    writer = ResultsWriter(path)
    for i in range(n):
        writer.append({"case_id": f"s{shard}-{i}", "status": "ok", "error": "x" * 2000})


def test_parallel_writers_never_mix_rows(tmp_path):
    import multiprocessing as mp

    out = tmp_path / "results.csv"
    procs = [mp.get_context("fork").Process(target=_append_rows, args=(out, k, 40))
             for k in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    rows = _rows(out)
    assert sorted(r["case_id"] for r in rows) == sorted(
        f"s{k}-{i}" for k in range(4) for i in range(40))
    assert all(r["error"] == "x" * 2000 for r in rows)  # whole rows, one header


def test_results_file_must_be_ours(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("x,y\n1,2\n")
    with pytest.raises(OutputError, match="not a ricecli batch results"):
        finished_cases(other)
    with pytest.raises(OutputError):
        ResultsWriter(tmp_path / "missing" / "r.csv")


def test_summarise():
    rows = [{"status": "ok", "label": "RICE", "true_label": "RICE"},
            {"status": "ok", "label": "RICE", "true_label": "recurrence"},
            {"status": "ok", "label": "RICE", "true_label": ""},
            {"status": "error"}]
    assert summarise(rows) == {"cases": 4, "ok": 3, "failed": 1, "qa_fail": 0, "errors": 1,
                               "with_true_label": 2, "labelled": 2, "accuracy": 0.5}


def test_summary_says_how_many_labelled_cases_the_accuracy_covers(tmp_path):
    """The issue's case: 3 of 4 labelled cases failed; the accuracy covers 1 of 4, and says so.
    The results file is read whole, a retried case counting by its last row."""
    out = tmp_path / "results.csv"
    writer = ResultsWriter(out)
    for row in ({"case_id": "a", "status": "ok", "label": "RICE", "true_label": "RICE"},
                {"case_id": "b", "status": "error", "true_label": "RICE"},
                {"case_id": "c", "status": "qa_fail", "true_label": "recurrence"},
                {"case_id": "d", "status": "error", "true_label": "RICE"}):
        writer.append(row)  # an earlier run
    writer.append({"case_id": "b", "status": "error", "true_label": "RICE"})  # --retry-failed
    rows = read_results(out)
    assert [r["case_id"] for r in rows] == ["a", "b", "c", "d"]
    assert summary_line(summarise(rows)) == (
        "4 case(s): 1 ok, 3 failed (1 failed QA, no label, 2 errors); accuracy 1.000 on the 1 "
        "of 4 cases with a true label that got an answer (3 got none: not counted)")
    none = summarise([{"status": "error", "true_label": "RICE"}])
    assert summary_line(none).endswith("none of the 1 cases with a true label got an answer: "
                                       "no accuracy")
    assert read_results(tmp_path / "none.csv") == []


def test_batch_refuses_unknown_manifest_columns(tmp_path, tiny_model, capsys):
    """simulate once wrote `brain_mask`, which batch ignored (and extracted the brain): an
    unknown column is refused before any case runs, naming it."""
    manifest = write_manifest(tmp_path, [("c1", "p.nii.gz", "e.nii.gz", "d.nii.gz", "m.nii.gz")],
                              header=("case_id", "post_op", "event", "dose", "brain_mask"))
    out = tmp_path / "results.csv"
    code, stdout, err = run_cli(["batch", str(manifest), "--out", str(out), "--model",
                                 str(tiny_model), "--device", "cpu"], capsys)
    (line,) = err.strip().splitlines()
    assert code == 2 and line.startswith(f"error: {manifest}: manifest has unknown column "
                                         "'brain_mask'. Fix: rename or remove it; the input "
                                         "columns are case_id, post_op, event, dose, label, mask")
    assert not out.exists() and stdout == ""


# --- end to end through the CLI, with real preparation and a real ONNX Runtime session --------

@pytest.mark.slow
def test_batch_end_to_end_resume_shard_and_failure(tmp_path, tiny_model, synthetic_case, capsys):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for src in synthetic_case.values():
        (cohort / src.name).symlink_to(src)
    rows = [("good", "post_op.nii.gz", "event.nii.gz", "dose.nii.gz", "recurrence"),
            ("broken", "post_op.nii.gz", "missing.nii.gz", "dose.nii.gz", "RICE")]
    manifest = write_manifest(cohort, rows)
    out = tmp_path / "results.csv"
    base = ["batch", str(manifest), "--out", str(out), "--model", str(tiny_model),
            "--device", "cpu"]
    code, text, err = run_cli([*base, "--shard", "1/2"], capsys)  # row 1 only
    assert code == 2, err  # every case of this run was refused: exit 2 (issue 10), row kept
    got = _rows(out)
    assert [r["case_id"] for r in got] == ["broken"] and got[0]["status"] == "error"
    assert "missing.nii.gz" in got[0]["error"] and got[0]["true_label"] == "RICE"
    text = " ".join(text.split())
    assert "broken failed" in text and "1 failed" in text

    code, text, err = run_cli(base, capsys)  # resumes: only "good" runs
    assert code == 0, err
    got = _rows(out)
    assert [r["case_id"] for r in got] == ["broken", "good"]
    good = got[1]
    assert good["status"] == "ok" and good["true_label"] == "recurrence"
    p = float(good["p_recurrence"])
    assert 0 <= p <= 1 and abs(p + float(good["p_RICE"]) - 1) < 1e-5
    assert good["label"] == ("recurrence" if p > 0.5 else "RICE")
    assert good["model_sha256"] == load_model(tiny_model).sha256 and good["members"] == "2"

    code, text, _ = run_cli(base, capsys)
    assert code == 0 and len(_rows(out)) == 2 and "0 to run" in " ".join(text.split())
    code, text, _ = run_cli([*base, "--retry-failed"], capsys)  # failed cases run again
    assert code == 2 and [r["case_id"] for r in _rows(out)] == ["broken", "good", "broken"]


@pytest.mark.slow
def test_batch_parallel_jobs_record_every_case(tmp_path, tiny_model, capsys):
    rows = [(f"c{i}", "none_post.nii.gz", "none_event.nii.gz", "none_dose.nii.gz", "")
            for i in range(3)]
    manifest = write_manifest(tmp_path, rows)
    out = tmp_path / "results.csv"
    code, _, err = run_cli(["batch", str(manifest), "--out", str(out), "--jobs", "2",
                            "--model", str(tiny_model), "--device", "cpu"], capsys)
    assert code == 2, err  # every case refused (missing files): exit 2, every row recorded
    got = _rows(out)
    assert sorted(r["case_id"] for r in got) == ["c0", "c1", "c2"]
    assert all(r["status"] == "error" and "none_" in r["error"] for r in got)


@pytest.mark.slow
def test_batch_explain_writes_maps(tmp_path, tiny_model, synthetic_case, capsys):
    rows = [("one", str(synthetic_case["post_op"]), str(synthetic_case["event"]),
             str(synthetic_case["dose"]), "")]
    manifest = write_manifest(tmp_path, rows)
    out = tmp_path / "results.csv"
    code, _, err = run_cli(["batch", str(manifest), "--out", str(out), "--explain",
                            "--model", str(tiny_model), "--device", "cpu"], capsys)
    assert code == 0, err
    row = _rows(out)[0]
    assert row["status"] == "ok", row["error"]
    folder = tmp_path / "results_explain" / "one"
    assert row["explain_dir"] == str(folder)
    assert (folder / "occlusion.nii.gz").is_file() and (folder / "overview.png").is_file()
    record = json.loads((folder / "explain.json").read_text())
    assert record["case_id"] == "one"


def test_bad_jobs_and_manifest_exit_2(tmp_path, tiny_model, capsys):
    code, _, err = run_cli(["batch", str(tmp_path / "no.csv"), "--out",
                            str(tmp_path / "r.csv"), "--model", str(tiny_model)], capsys)
    assert code == 2 and "manifest not found" in err
    code, _, err = run_cli(["batch", str(tmp_path / "no.csv"), "--out",
                            str(tmp_path / "r.csv"), "--jobs", "0"], capsys)
    assert code == 2 and "--jobs" in err


def test_exit_code_when_every_case_failed():
    from ricecli.batch_results import exit_code

    ok, refused = {"status": "ok"}, {"status": "error", "error": "x.nii: file not found"}
    internal = {"status": "error", "error": "internal error: ValueError: boom"}
    assert exit_code([]) == 0 and exit_code([ok, refused]) == 0
    assert exit_code([refused, refused]) == 2
    assert exit_code([refused, internal]) == 1
    assert exit_code([refused, {"status": "qa_fail"}]) == 3


def test_qa_failed_case_is_a_row_without_label(tmp_path):
    from ricecli.batch_results import result_row
    from ricecli.io.manifest import ManifestCase
    from ricecli.result import CaseResult, Finding, QAReport

    case = ManifestCase(0, "c0", tmp_path / "p", tmp_path / "e", tmp_path / "d", label="RICE")
    qa = QAReport("fail", reasons=[Finding("x", "a"), Finding("y", "b")],
                  warnings=[Finding("z", "w")])
    result = CaseResult(label=None, probabilities=None, probabilities_uncalibrated=None,
                        decision="no label", votes=None, members=[], uncertainty=None,
                        calibration={}, qa=qa, timings_s={}, model={"sha256": "abc"},
                        engine={"name": "cpu"}, inputs={})
    row = result_row(case, result, None, 1.0)
    assert row["status"] == "qa_fail" and row["qa_verdict"] == "fail"
    assert row["qa_reasons"] == "a | b" and row["warnings"] == "w" and "label" not in row
    writer = ResultsWriter(tmp_path / "r.csv")
    writer.append(row)
    assert finished_cases(tmp_path / "r.csv") == {"c0"}  # done: resume does not rerun it


@pytest.mark.slow
def test_batch_jobs_give_the_same_bits_as_one_process(tmp_path, tiny_model, synthetic_case,
                                                      capsys):
    """Same inputs, same bits, whether a case runs in this process or in a worker of --jobs 2."""
    case = (str(synthetic_case["post_op"]), str(synthetic_case["event"]),
            str(synthetic_case["dose"]), "")
    manifest = write_manifest(tmp_path, [("a", *case), ("b", *case)])
    probs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"results{jobs}.csv"
        code, _, err = run_cli(["batch", str(manifest), "--out", str(out), "--jobs", jobs,
                                "--model", str(tiny_model), "--device", "cpu"], capsys)
        assert code == 0, err
        probs.append({r["case_id"]: r["p_recurrence"] for r in _rows(out)})
    assert probs[0] == probs[1] and probs[0]["a"] == probs[0]["b"]
