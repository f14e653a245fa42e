"""ricecli.errors: every failure ends as one line and the right exit code."""

from __future__ import annotations

import subprocess
import sys

from ricecli.errors import InputError, report_error


def test_domain_error_is_exit_2_with_file_and_fix(capsys):
    code = report_error(InputError("file not found", "/data/a.nii", fix="check the path"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: /data/a.nii: file not found. Fix: check the path"]


def test_internal_error_is_exit_1_one_line(capsys):
    code = report_error(ValueError("first line\nsecond line"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("internal error: ValueError: first")


def test_cli_usage_error_exits_2_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "ricecli.cli", "prepare", "--bogus"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "No such option" in proc.stderr and "Traceback" not in proc.stderr
