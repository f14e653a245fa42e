"""`ricecli info`: model card, spec, engines and versions, as tables or JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from model_fixtures import run_cli

from ricecli.inference import model as model_mod

ROOT = Path(__file__).resolve().parents[1]


def test_info_json_with_model(tiny_model, capsys):
    code, out, _ = run_cli(["info", "--model", str(tiny_model), "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["model"]["name"] == "ricenet-test" and info["model"]["members"] == 2
    assert info["spec"]["model_space"]["size_xyz"] == [24, 28, 24]
    assert info["engines"]["onnxruntime-cpu"] is True
    assert {"ricecli", "onnxruntime", "SimpleITK", "numpy"} <= set(info["versions"])


def test_info_tables(tiny_model, capsys):
    code, out, _ = run_cli(["info", "--model", str(tiny_model)], capsys)
    assert code == 0
    assert "ricenet-test" in out and "onnxruntime-cpu" in out and "tests only" in out


def test_info_without_default_model_still_lists_engines(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(model_mod, "default_model_path", lambda: tmp_path / "none.onnx")
    code, out, _ = run_cli(["info", "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["model"] is None and "--model" in info["model_note"]


def test_info_bad_model_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_text("nope")
    code, _, err = run_cli(["info", "--model", str(bad)], capsys)
    assert code == 2 and str(bad) in err and "Fix:" in err


NO_ORT = """
import importlib.abc, sys
class NoOnnxRuntime(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "onnxruntime":
            raise ImportError(f"No module named {name!r} (blocked)")
sys.meta_path.insert(0, NoOnnxRuntime())
sys.argv = ["ricecli", *sys.argv[1:]]
from ricecli.cli import main
main()
"""


@pytest.mark.parametrize("args", [[], ["--json"]])
def test_info_without_onnxruntime_exits_2_naming_the_cpu_extra(args):
    """A process where onnxruntime cannot be imported, as after `pip install ricecli` alone."""
    proc = subprocess.run([sys.executable, "-c", NO_ORT, "info", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ONNX Runtime is not installed" in lines[0]
    assert "pip install 'ricecli[cpu]'" in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_info_summary_is_readable(tiny_model, capsys):
    code, out, _ = run_cli(["info", "--model", str(tiny_model)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("ricenet-test 0.0.1  (onnx, 2 members)")
    assert "classes:      RICE, recurrence" in lines
    assert "grid:         24 x 28 x 24 voxels of 6 x 6 x 6 mm" in out
    assert "calibration:  none" in out and "{" not in out  # a summary, not JSON


def test_version(capsys):
    from ricecli import __version__

    code, out, err = run_cli(["--version"], capsys)
    assert (code, out, err) == (0, f"ricecli {__version__}\n", "")


@pytest.mark.parametrize("command", ["classify", "explain", "prepare"])
def test_help_at_80_columns_cuts_nothing(command):
    """At 80 columns every option name is shown whole (rich cut them: '--dose-relative-sc…'),
    no line is longer than 80, and --t1 says it takes a file or a folder (PATH)."""
    from typer.testing import CliRunner

    from ricecli.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "80"},
                                prog_name="ricecli")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.output
    for option in ("--dose-relative-scale GY", "--brain-extraction / --no-brain-extraction",
                   "--t1 PATH", "--dicom-out DIR"):
        assert option in result.output or command == "prepare" and option == "--dicom-out DIR"
    assert "image file or DICOM series folder" in result.output


def test_batch_help_has_its_own_exit_codes():
    from typer.testing import CliRunner

    from ricecli.cli import app

    text = " ".join(CliRunner().invoke(app, ["batch", "--help"], env={"COLUMNS": "100"},
                                       prog_name="ricecli").output.split())
    assert "a failed case gets no label and exit code 3" not in text  # classify's, not batch's
    assert "recorded without a label (status qa_fail) and the batch goes on" in text
    assert "3 if any failed QA, else 1 if any internal error, else 2" in text


def test_command_list_at_80_columns_is_whole():
    """`ricecli --help` lists each command's first sentence whole (click cut them with '...')."""
    from typer.testing import CliRunner

    from ricecli.cli import app

    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "80"}, prog_name="ricecli")
    listing = result.output.split("Commands:")[1]
    assert result.exit_code == 0 and "..." not in listing and "--version" in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    text = " ".join(result.output.split())
    assert "batch Classify many cases; a failing case is recorded with its error and the rest " \
        "go on." in text
