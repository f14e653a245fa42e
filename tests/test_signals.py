"""Ctrl-C (SIGINT) and SIGTERM end a real `ricecli` process with exit 130 / 143, one line
"interrupted", no traceback, and nothing partial left; batch writes no spurious row and resumes."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ricecli.errors import EXIT_SIGINT, EXIT_SIGTERM


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ricecli.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"finished before the signal: {proc.communicate()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("the condition never came")
        time.sleep(0.05)


def _interrupted(proc: subprocess.Popen, signum: int) -> tuple[int, str]:
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, delay", [(signal.SIGINT, EXIT_SIGINT, 0.3),
                                                 (signal.SIGTERM, EXIT_SIGTERM, 1.5)])
def test_explain_interrupted_mid_run_leaves_nothing(signum, code, delay, tiny_model,
                                                    synthetic_case, tmp_path):
    out = tmp_path / "maps"
    proc = _start(["explain", "--t1", str(synthetic_case["post_op"]), "--t1",
                   str(synthetic_case["event"]), "--dose", str(synthetic_case["dose"]),
                   "--model", str(tiny_model), "--device", "cpu", "--out", str(out)], tmp_path)
    # the staged folder exists from the start of the work (reading, registering) on
    _wait_for(lambda: any(p.name.endswith(".partial") for p in tmp_path.iterdir()), proc)
    time.sleep(delay)  # into the reading / registration
    rc, err = _interrupted(proc, signum)
    assert rc == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == "interrupted" and "Traceback" not in err, err
    assert sum("interrupted" in line for line in lines) == 1
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())  # no output, no .partial


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_batch_stops_at_once_without_a_spurious_row_and_resumes(tiny_model, synthetic_case,
                                                                tmp_path):
    manifest = tmp_path / "manifest.csv"
    lines = ["case_id,post_op,event,dose"] + [
        f"c{i},{synthetic_case['post_op']},{synthetic_case['event']},{synthetic_case['dose']}"
        for i in range(3)]
    manifest.write_text("\n".join(lines) + "\n")
    results = tmp_path / "results.csv"
    args = ["batch", str(manifest), "--out", str(results), "--model", str(tiny_model),
            "--device", "cpu"]
    proc = _start(args, tmp_path)
    _wait_for(lambda: results.is_file() and len(_rows(results)) >= 1, proc, timeout=300)
    time.sleep(0.5)  # into the next case
    started = time.monotonic()
    rc, err = _interrupted(proc, signal.SIGINT)
    assert rc == EXIT_SIGINT and time.monotonic() - started < 30, err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    done = _rows(results)
    assert all(r["status"] == "ok" for r in done) and len(done) < 3  # no spurious error row
    rerun = subprocess.run([sys.executable, "-m", "ricecli.cli", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    rows = _rows(results)
    assert sorted(r["case_id"] for r in rows) == ["c0", "c1", "c2"]
    assert all(r["status"] == "ok" for r in rows)
