"""export/to_onnx.py: one verified ONNX ensemble with spec and card, on CPU with a tiny net."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.to_onnx import INTENDED_USE, export_ensemble, read_check_case
from ricecli.contract import CARD_KEY, SPEC_KEY
from ricecli.errors import InputError, ModelError
from ricecli.spec import ModelSpace, Spec
from train.checkpoint import save_checkpoint
from train.model import Ensemble, arch_config, build_network

ROOT = Path(__file__).resolve().parents[1]
SPEC = Spec(model_space=ModelSpace(spacing_mm=(6.0, 6.0, 6.0), size_xyz=(24, 28, 24)),
            preset="tiny")


def tiny_members(n: int = 2, seed: int = 0) -> list[torch.nn.Module]:
    torch.manual_seed(seed)
    return [build_network(arch_config("tiny"), len(SPEC.channels)).eval() for _ in range(n)]


def volumes(batch: int, seed: int) -> np.ndarray:
    shape = (batch, len(SPEC.channels), *SPEC.model_space.shape_zyx)
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    members = tiny_members(3)
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    report = export_ensemble(members, SPEC, {"name": "tiny-test", "version": "9.9"}, out,
                             exporter="torchscript")
    return members, out, report


def test_graph_contract_and_dynamic_batch(exported):
    members, out, report = exported
    onnx.checker.check_model(str(out), full_check=True)
    proto = onnx.load(str(out))
    assert proto.opset_import[0].version >= 17
    # the members' stem convs were merged once, here (export/merge_convs.py)
    assert [n.op_type for n in proto.graph.node if "volumes" in n.input] == ["Conv"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["volumes"]
    assert [o.name for o in session.get_outputs()] == ["probabilities", "member_probabilities"]
    assert isinstance(session.get_inputs()[0].shape[0], str)  # symbolic batch axis
    assert session.get_inputs()[0].shape[1:] == [3, 24, 28, 24]
    reference = Ensemble(members).eval()
    for batch in (1, 3):
        x = volumes(batch, seed=batch)
        mean, member = session.run(None, {"volumes": x})
        assert mean.shape == (batch, 2) and member.shape == (batch, 3, 2)
        with torch.no_grad():
            want_mean, want_member = reference(torch.from_numpy(x))
        assert np.abs(mean - want_mean.numpy()).max() <= 1e-4
        assert np.abs(member - want_member.numpy()).max() <= 1e-4
        np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-5)
    assert report.parity["random"] <= 1e-4 and report.members == 3 and not report.fp16
    assert report.size_bytes == out.stat().st_size
    assert report.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()


def test_metadata_round_trip(exported):
    _, out, _ = exported
    props = meta(out)
    assert Spec.from_json(props[SPEC_KEY]) == SPEC
    card = json.loads(props[CARD_KEY])
    assert card["name"] == "tiny-test" and card["version"] == "9.9"
    assert card["classes"] == ["RICE", "recurrence"]
    assert card["intended_use"] == INTENDED_USE and card["fp16"] is False
    assert len(card["members"]) == 3 and card["created"]
    assert card["exporter"]["torch"] == torch.__version__ and card["exporter"]["opset"] >= 17


def test_ricecli_loader_reads_export(exported):
    from ricecli.inference import model

    _, out, _ = exported
    loaded = model.load_model(out)
    assert loaded.spec == SPEC and loaded.name == "tiny-test" and loaded.version == "9.9"
    assert loaded.members == 3 and loaded.fixed_batch is None


def test_fp16_export_keeps_float32_interface(tmp_path):
    members = tiny_members(2, seed=1)
    out = tmp_path / "tiny16.onnx"
    report = export_ensemble(members, SPEC, {}, out, fp16=True, exporter="torchscript")
    proto = onnx.load(str(out))
    kinds = {t.data_type for t in proto.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds
    for value in (*proto.graph.input, *proto.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert report.fp16 and json.loads(meta(out)[CARD_KEY])["fp16"] is True
    assert 0.0 < report.parity["random"] < 1e-2  # fp16 differs, but not by much


def test_failed_check_leaves_target_untouched(tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous model")
    with pytest.raises(ModelError, match="disagrees"):
        export_ensemble(tiny_members(1), SPEC, {}, out, tol=-1.0, exporter="torchscript")
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_check_case_readers(tmp_path):
    import SimpleITK as sitk

    case = volumes(1, seed=5)[0]
    for name, arr in zip(SPEC.channels, case, strict=True):
        sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / f"{name}.nii.gz"))
    np.testing.assert_array_equal(read_check_case(tmp_path, SPEC), case[None])
    npz = tmp_path / "case.npz"
    np.savez(npz, **dict(zip(SPEC.channels, case, strict=True)))
    np.testing.assert_array_equal(read_check_case(npz, SPEC), case[None])
    np.savez(npz, volumes=case[:, :10])
    with pytest.raises(InputError, match="shape"):
        read_check_case(npz, SPEC)


def make_run(run: Path, folds: int = 2) -> list[Path]:
    paths = []
    for k, net in enumerate(tiny_members(folds, seed=7)):
        path = run / f"fold{k}" / "best.safetensors"
        save_checkpoint(path, net, SPEC, arch_config("tiny"), k,
                        {"macro_f1": 0.6 + 0.1 * k, "epoch": 4}, {"epochs": 4, "lr": 1e-3})
        paths.append(path)
    (run / "folds.json").write_text(json.dumps({"k": folds, "seed": 3, "n_cases": 8,
                                                "n_patients": 8, "val": [["a"], ["b"]]}))
    return paths


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "export" / "to_onnx.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    run = tmp_path / "run"
    ckpts = make_run(run)
    case = tmp_path / "case.npz"
    np.savez(case, volumes=volumes(1, seed=9)[0])
    out = tmp_path / "out" / "model.onnx"
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"heldout_test_simulated": {"macro_f1": 0.5}}))
    proc = run_script("--run", str(run), "--out", str(out), "--folds", "all", "--name", "cli",
                      "--check-case", str(case),  # auto: dynamo where onnxscript is there
                      "--card-extra", str(extra))
    assert proc.returncode == 0, proc.stderr
    assert "parity fp32 on random" in proc.stdout and "parity fp32 on case case.npz" in proc.stdout
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["parity"]["case case.npz"] <= 1e-4 and report["size_bytes"] > 0
    want_exporter = "dynamo" if importlib.util.find_spec("onnxscript") else "torchscript"
    assert report["exporter"] == want_exporter
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    mean, member = session.run(None, {"volumes": volumes(3, seed=4)})
    assert mean.shape == (3, 2) and member.shape == (3, 2, 2)
    card = json.loads(meta(out)[CARD_KEY])
    assert card["name"] == "cli" and [m["fold"] for m in card["members"]] == [0, 1]
    want = {f"fold{k}/best.safetensors": hashlib.sha256(p.read_bytes()).hexdigest()
            for k, p in enumerate(ckpts)}
    assert card["source_checkpoints"] == want
    assert card["metrics"]["val_macro_f1"]["mean"] == pytest.approx(0.65)
    assert card["training"]["folds"] == {"k": 2, "seed": 3, "n_cases": 8, "n_patients": 8}
    assert card["training"]["config"]["epochs"] == 4
    assert card["heldout_test_simulated"] == {"macro_f1": 0.5}


def test_cli_card_extra_not_json_one_line_exit_2(tmp_path):
    run = tmp_path / "run"
    make_run(run)
    bad = tmp_path / "extra.json"
    bad.write_text("not json")
    proc = run_script("--run", str(run), "--out", str(tmp_path / "m.onnx"),
                      "--card-extra", str(bad))
    assert proc.returncode == 2 and "--card-extra" in proc.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_cli_bad_run_one_line_exit_2(tmp_path):
    proc = run_script("--run", str(tmp_path / "nope"), "--out", str(tmp_path / "m.onnx"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "run folder not found" in lines[0] and "Fix:" in lines[0]
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_gpu_check_script_degrades_to_cpu(tmp_path):
    env = {**__import__("os").environ, "OUT": str(tmp_path / "out"),
           "GPU_CHECK_WORK": str(tmp_path / "work"), "GPU_CHECK_PRESETS": "edge",
           "GPU_CHECK_ARCH": "tiny", "GPU_CHECK_SIZE_XYZ": "24x28x24", "GPU_CHECK_REPS": "2",
           "GPU_CHECK_MEMBERS": "1", "GPU_CHECK_OCC_BATCH": "2",
           "GPU_CHECK_EXPORTER": "torchscript"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert {(e["preset"], e["fp16"]) for e in data["exports"]} == {("edge", False),
                                                                    ("edge", True)}
    engines = {r["engine"] for r in data["rows"]}
    assert "onnxruntime-CPU" in engines
    if not data["env"]["gpu"]:
        assert any(s["what"] == "torch-cuda edge" for s in data["skipped"])
    assert (tmp_path / "out" / "gpu_check.log").read_text().rstrip().splitlines()[-1]
