"""`ricecli classify` end to end: real preparation (SimpleITK registration), a real ONNX Runtime
session on a tiny exported ensemble, the JSON record, orientation/format invariance, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_fixtures import export_tiny_model, run_cli, tiny_ensemble, write_case

from ricecli.inference import model as model_mod
from ricecli.inference.model import load_model

KEYS = {"label", "probabilities", "members", "qa", "timings_s", "model", "inputs"}


def _args(case: dict, model, *extra: str) -> list[str]:
    return ["classify", "--t1", str(case["post_op"]), "--t1", str(case["event"]),
            "--dose", str(case["dose"]), "--model", str(model), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def classified(tmp_path_factory, tiny_model, synthetic_case) -> dict:
    """The JSON result of one classify run on the synthetic case (with --save-prepared)."""
    out = tmp_path_factory.mktemp("classify")
    code, _, _ = run_cli(_args(synthetic_case, tiny_model, "--json", str(out / "r.json"),
                               "--save-prepared", str(out / "prepared")))
    assert code == 0
    return {"result": json.loads((out / "r.json").read_text()), "dir": out}


@pytest.mark.slow
def test_json_record(classified, tiny_model, synthetic_case):
    r = classified["result"]
    assert KEYS <= set(r)
    probs = r["probabilities"]
    assert set(probs) == {"RICE", "recurrence"} and abs(sum(probs.values()) - 1) < 1e-5
    assert r["label"] == max(probs, key=probs.get)
    assert len(r["members"]) == 2 and sum(r["votes"].values()) == 2
    mean = np.mean([m["probabilities"]["recurrence"] for m in r["members"]])
    assert abs(mean - probs["recurrence"]) < 1e-5
    assert {"prepare", "infer", "total"} <= set(r["timings_s"])
    assert r["model"] == {"name": "ricenet-test", "version": "0.0.1", "path": str(tiny_model),
                          "sha256": load_model(tiny_model).sha256}
    assert r["inputs"]["event"] == str(synthetic_case["event"])
    assert r["engine"]["name"] == "onnxruntime-cpu"
    assert any((classified["dir"] / "prepared").iterdir())
    assert r["prepared_dir"] == str(classified["dir"] / "prepared")


@pytest.mark.slow
def test_json_has_exactly_the_documented_fields(classified):
    from test_record import QA_SECTION, check_schema, documented_fields

    r = classified["result"]
    check_schema(r)  # docs/result-schema.md: every field, in order, of its documented type
    assert list(r["qa"]) == list(documented_fields(QA_SECTION))
    check_schema(r["qa"], QA_SECTION)


@pytest.mark.slow
def test_probability_equals_torch_on_the_prepared_case(classified, synthetic_case):
    import torch

    from ricecli.prepare import CaseInputs, prepare_case, to_tensor

    spec = load_model(classified["result"]["model"]["path"]).spec
    case = prepare_case(CaseInputs(post_op=synthetic_case["post_op"],
                                   event=synthetic_case["event"], dose=synthetic_case["dose"]),
                        spec)
    with torch.no_grad():
        probs, _ = tiny_ensemble()(torch.from_numpy(to_tensor(case, spec)[None]))
    got = classified["result"]["probabilities"]["recurrence"]
    assert abs(float(probs[0, 1]) - got) < 1e-4


@pytest.mark.slow
def test_other_orientation_and_format_same_probability(classified, tiny_model, tmp_path,
                                                      capsys):
    ras = write_case(tmp_path / "ras", ext=".nrrd", orient="RAS")
    code, out, err = run_cli(_args(ras, tiny_model, "--json", "-"), capsys)  # JSON on stdout
    assert code == 0, err
    assert "p(recurrence)" in err  # the summary goes to stderr when JSON goes to stdout
    got = json.loads(out)["probabilities"]["recurrence"]
    assert abs(got - classified["result"]["probabilities"]["recurrence"]) < 0.01


@pytest.mark.parametrize("kind", ["missing", "text", "no_metadata", "no_default"])
def test_bad_model_exits_2(kind, tmp_path, synthetic_case, monkeypatch, capsys):
    model = tmp_path / "m.onnx"
    if kind == "text":
        model.write_text("not a model")
    elif kind == "no_metadata":
        export_tiny_model(model, members=1, metadata=False)
    args = _args(synthetic_case, model)
    if kind == "no_default":
        monkeypatch.setattr(model_mod, "default_model_path", lambda: tmp_path / "none.onnx")
        args = args[: args.index("--model")] + args[args.index("--model") + 2:]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert ("--model" in err) if kind == "no_default" else (str(model) in err)


def test_usage_errors_exit_2(tiny_model, synthetic_case, tmp_path, capsys):
    code, _, err = run_cli(["classify", "--t1", str(synthetic_case["event"]), "--dose",
                            str(synthetic_case["dose"]), "--model", str(tiny_model)], capsys)
    assert code == 2 and "--t1" in err
    code, _, err = run_cli(_args(synthetic_case, tiny_model, "--json",
                                 str(synthetic_case["dose"])), capsys)
    assert code == 2 and "overwrite an input" in err
    code, _, err = run_cli(_args(synthetic_case, tiny_model, "--save-prepared",
                                 str(synthetic_case["event"].parent)), capsys)
    assert code == 2 and "input" in err


def test_cuda_without_gpu_exits_2(tiny_model, synthetic_case, capsys):
    from ricecli.inference.engine import available_engines

    if available_engines()["onnxruntime-cuda"]:
        pytest.skip("this machine has a CUDA onnxruntime")
    args = _args(synthetic_case, tiny_model)
    args[args.index("cpu")] = "cuda"
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "CUDA" in err and "--device cpu" in err


def _dose_on(reference_path, out_path):
    """A 60 Gy Gaussian dose on a 2.5 mm grid over a real scan's field of view."""
    import SimpleITK as sitk

    ref = sitk.ReadImage(str(reference_path))
    grid = sitk.Image([int(n * s / 2.5) for n, s in zip(ref.GetSize(), ref.GetSpacing(),
                                                        strict=True)], sitk.sitkFloat32)
    grid.SetSpacing([2.5] * 3)
    grid.SetOrigin(ref.GetOrigin())
    grid.SetDirection(ref.GetDirection())
    centre = ref.TransformContinuousIndexToPhysicalPoint([n / 2 for n in ref.GetSize()])
    zyx = np.indices(grid.GetSize()[::-1]).reshape(3, -1)[::-1].T * 2.5
    world = zyx @ np.reshape(grid.GetDirection(), (3, 3)).T + grid.GetOrigin()
    d2 = ((world - centre) ** 2).sum(axis=1).reshape(grid.GetSize()[::-1])
    dose = sitk.GetImageFromArray((60 * np.exp(-d2 / (2 * 30.0**2))).astype(np.float32))
    dose.CopyInformation(grid)
    sitk.WriteImage(dose, str(out_path))
    return out_path


@pytest.mark.slow
def test_real_brats_case_and_its_reoriented_copy(shared_data, tiny_model, tmp_path):
    import SimpleITK as sitk

    folder = shared_data / "mri" / "BraTS-GLI-00001-000"
    post = next(folder.glob("*-t1n.nii.gz"))
    event = next(folder.glob("*-t1c.nii.gz"))
    dose = _dose_on(post, tmp_path / "dose.nii.gz")
    results = []
    for tag, files in (("as_given", {"post_op": post, "event": event, "dose": dose}),
                       ("ras_mha", {})):
        if tag == "ras_mha":
            for name, src in (("post_op", post), ("event", event), ("dose", dose)):
                files[name] = tmp_path / f"{name}_ras.mha"
                sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(str(src)), "RAS"),
                                str(files[name]))
        out = tmp_path / f"{tag}.json"
        code, _, _ = run_cli(_args(files, tiny_model, "--json", str(out)))
        assert code == 0
        results.append(json.loads(out.read_text()))
    p = [r["probabilities"]["recurrence"] for r in results]
    assert abs(p[0] - p[1]) < 0.01
    assert results[0]["inputs"]["event"] == str(event)


def test_repeated_dose_is_refused(tiny_model, synthetic_case, capsys):
    code, _, err = run_cli(_args(synthetic_case, tiny_model, "--dose",
                                 str(synthetic_case["dose"])), capsys)
    assert code == 2 and "--dose was given 2 times" in err and len(err.strip().splitlines()) == 1


def test_json_needs_overwrite_like_prepare_and_explain(tiny_model, synthetic_case, tmp_path,
                                                       capsys):
    existing = tmp_path / "result.json"
    existing.write_text("keep me")
    code, _, err = run_cli(_args(synthetic_case, tiny_model, "--json", str(existing)), capsys)
    assert code == 2 and "--overwrite" in err and existing.read_text() == "keep me"


def test_output_under_a_file_is_exit_2_with_a_fix(tiny_model, synthetic_case, tmp_path, capsys):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    for option, target in (("--json", plain / "r.json"), ("--save-prepared", plain / "out")):
        code, _, err = run_cli(_args(synthetic_case, tiny_model, option, str(target)), capsys)
        assert code == 2 and "is a file, not a folder" in err and "Fix:" in err, err


def test_model_is_an_input_too(tiny_model, synthetic_case, capsys):
    code, _, err = run_cli(_args(synthetic_case, tiny_model, "--save-prepared",
                                 str(tiny_model.parent), "--overwrite"), capsys)
    assert code == 2 and "holds an input" in err and tiny_model.exists()


@pytest.mark.parametrize("command", ["prepare", "classify", "explain"])
def test_one_t1_is_the_same_one_line_error_in_every_command(command, tiny_model, synthetic_case,
                                                            tmp_path, capsys):
    args = [command, "--t1", str(synthetic_case["event"]), "--dose", str(synthetic_case["dose"])]
    if command != "prepare":
        args += ["--model", str(tiny_model)]
    if command != "classify":
        args += ["--out", str(tmp_path / "out")]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and not (tmp_path / "out").exists()
    assert err.strip().splitlines() == [
        "error: --t1 was given 1 time, it needs exactly two. Fix: pass --t1 POSTOP --t1 EVENT "
        "(the post-operative scan first)"]
