"""pyproject.toml: the CPU and GPU ONNX Runtime builds can never be installed together by an
extra (both unpack into one `onnxruntime/` folder), and the GPU extra is one CUDA major."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORT_BUILDS = {"onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0].lower()


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _resolve(project: dict, extras: set[str]) -> list[str]:
    """Requirements of ricecli with `extras`, following ricecli[...] self-references."""
    out, todo, seen = list(project["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in project["optional-dependencies"][extra]:
            if _name(req) == "ricecli":
                todo += re.search(r"\[(.*)\]", req).group(1).split(",")
            else:
                out.append(req)
    return out


def test_base_names_no_onnxruntime_build():
    assert not {_name(r) for r in _project()["dependencies"]} & ORT_BUILDS


@pytest.mark.parametrize("extra,build", [("cpu", "onnxruntime"), ("gpu", "onnxruntime-gpu"),
                                         ("tensorrt", "onnxruntime-gpu"),
                                         ("dev", "onnxruntime"), ("train", None)])
def test_each_extra_brings_at_most_one_build(extra, build):
    names = {_name(r) for r in _resolve(_project(), {extra})}
    assert names & ORT_BUILDS == ({build} if build else set())


def test_gpu_extras_are_one_cuda_major():
    from ricecli.inference.gpu import CUDA_MAJOR

    gpu = {_name(r): r for r in _resolve(_project(), {"tensorrt"})
           if _name(r) in {"onnxruntime-gpu", "cuda-python"} or "tensorrt" in _name(r)}
    # ONNX Runtime's TensorRT provider loads TensorRT itself: no cuda-python
    assert set(gpu) == {"onnxruntime-gpu", f"tensorrt-cu{CUDA_MAJOR}"}
    assert "[cuda,cudnn]>=1.27" in gpu["onnxruntime-gpu"]  # 1.27 is the first CUDA 13 build
