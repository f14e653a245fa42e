"""`ricecli info`: model card, spec, engines and versions, as tables or JSON."""

from __future__ import annotations

import json

from model_fixtures import run_cli

from ricecli.inference import model as model_mod


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
