"""The CLI boundary (ricecli/cli.py): every failure ends as one line and the right exit code."""

from __future__ import annotations

import subprocess
import sys

from ricecli.cli import report_error
from ricecli.errors import InputError


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


def test_one_line_keeps_dots_in_paths():
    err = InputError("is not an image.", "../cases/a..b/../t1c.nii.gz", fix="check it.")
    line = err.one_line()
    assert line == "../cases/a..b/../t1c.nii.gz: is not an image. Fix: check it."


def test_usage_error_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "ricecli.cli", "classify", "--t1", "a.nii"],
                          capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("usage error: Missing option") and "--help" in lines[0]


def test_unwritable_path_is_exit_2_with_a_fix(capsys):
    import errno

    code = report_error(PermissionError(errno.EACCES, "Permission denied", "/ro/out.json"))
    line = capsys.readouterr().err.strip()
    assert code == 2 and line.startswith("error: /ro/out.json: cannot be written")
    assert "Fix:" in line


def test_interrupts_are_130_and_143_one_line(capsys):
    import signal

    from ricecli.signals import Interrupted

    assert report_error(Interrupted(signal.SIGINT)) == 130
    assert report_error(Interrupted(signal.SIGTERM)) == 143
    assert report_error(KeyboardInterrupt()) == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted"] * 3


def test_help_lists_the_exit_codes():
    proc = subprocess.run([sys.executable, "-m", "ricecli.cli", "--help"], capture_output=True,
                          text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0
    for words in ("0 answer", "1 internal error", "2 refused input or usage", "3 ran but QA failed",
                  "130/143 interrupted"):
        assert words in text, text
