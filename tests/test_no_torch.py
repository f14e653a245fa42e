"""ricecli is torch-free: no module imports torch/monai, and `ricecli classify` runs (and
succeeds) in a process where importing torch is impossible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCK = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "monai", "train", "export"):
            raise ImportError(f"blocked import of {name} (ricecli must be torch-free)")
sys.meta_path.insert(0, NoTorch())
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code, *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_every_ricecli_module_imports_without_torch():
    code = """
import pkgutil, importlib, ricecli
names = [m.name for m in pkgutil.walk_packages(ricecli.__path__, "ricecli.")]
for n in names:
    importlib.import_module(n)
print(len(names), sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "monai")))
"""
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    count, loaded = proc.stdout.split(" ", 1)
    assert int(count) >= 10 and loaded.strip() == "[]"


@pytest.mark.slow
def test_classify_process_never_imports_torch(tiny_model, synthetic_case, tmp_path):
    code = """
import atexit
atexit.register(lambda: print("HEAVY", sorted(m for m in sys.modules
                                            if m.split(".")[0] in ("torch", "monai"))))
sys.argv = ["ricecli", *sys.argv[1:]]
from ricecli.cli import main
main()
"""
    out = tmp_path / "r.json"
    proc = _python(code, "classify", "--t1", str(synthetic_case["post_op"]), "--t1",
                   str(synthetic_case["event"]), "--dose", str(synthetic_case["dose"]),
                   "--model", str(tiny_model), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert json.loads(out.read_text())["label"] in ("RICE", "recurrence")
