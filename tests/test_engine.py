"""ricecli.inference.engine: ONNX Runtime sessions agree with torch, split batches, pick devices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_fixtures import TINY_SPEC, tiny_ensemble

from ricecli.errors import ModelError, RicenetError
from ricecli.inference.engine import (
    Engine,
    OnnxRuntimeEngine,
    available_engines,
    describe,
    open_engine,
)
from ricecli.inference.gpu import providers_for
from ricecli.inference.model import load_model
from ricecli.runtime import physical_cores


def _volumes(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3, *TINY_SPEC.model_space.shape_zyx)).astype(np.float32)


def test_onnxruntime_matches_torch(tiny_model):
    import torch

    engine = open_engine(load_model(tiny_model), "cpu")
    assert isinstance(engine, Engine) and engine.name == "onnxruntime-cpu"
    x = _volumes(3)
    probs, members = engine.run(x)
    with torch.no_grad():
        ref_probs, ref_members = tiny_ensemble()(torch.from_numpy(x))
    assert probs.shape == (3, 2) and members.shape == (3, 2, 2)
    np.testing.assert_allclose(probs, ref_probs.numpy(), atol=1e-5)
    np.testing.assert_allclose(members, ref_members.numpy(), atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_large_batch_is_split_and_joined(tiny_model):
    engine = OnnxRuntimeEngine(load_model(tiny_model), threads=1)
    x = _volumes(5, seed=2)
    whole = engine.run(x)
    engine.max_batch = 2
    split = engine.run(x)
    single = engine.run(x[3])  # a 4-D volume is a batch of one
    np.testing.assert_allclose(split[0], whole[0], atol=1e-6)
    np.testing.assert_allclose(split[1], whole[1], atol=1e-6)
    np.testing.assert_allclose(single[0][0], whole[0][3], atol=1e-6)


def test_one_session_per_model_and_device(tiny_model):
    import onnxruntime as ort

    model = load_model(tiny_model)
    assert open_engine(model, "cpu") is open_engine(model, "cpu")
    auto = open_engine(model, "auto")
    assert auto.providers[-1] == "CPUExecutionProvider" and "batch <=" in describe(auto)
    # issue 16: the provider is the one the policy asked for and the session really got
    # (get_providers() after creation), or a fallback that says so
    asked = providers_for("auto", ort.get_available_providers())
    assert auto.requested == asked
    assert list(auto.session.get_providers()) == auto.providers
    if auto.providers[0] == asked[0]:
        assert auto.fallback is None and "fell back" not in describe(auto)
    else:
        assert auto.providers[0] == "CPUExecutionProvider" and auto.fallback


def test_wrong_shape_is_a_model_error(tiny_model):
    engine = open_engine(load_model(tiny_model), "cpu")
    with pytest.raises(ModelError, match="expects"):
        engine.run(np.zeros((1, 3, 8, 8, 8), np.float32))


def test_cuda_without_gpu_is_a_clear_error(tiny_model):
    if available_engines()["onnxruntime-cuda"]:
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(RicenetError, match="--device cpu"):
        open_engine(load_model(tiny_model), "cuda")
    with pytest.raises(RicenetError, match="unknown device"):
        open_engine(load_model(tiny_model), "tpu")


def test_available_engines_and_cores():
    have = available_engines()
    assert have["onnxruntime-cpu"] is True
    assert set(have) == {"onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt",
                         "tensorrt"}
    assert 1 <= physical_cores() <= 1024


# --- issue 16: the GPU paths, tested without a GPU ------------------------------------------

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.fixture
def gpu_listed(monkeypatch, tmp_path):
    """This onnxruntime claims the CUDA and TensorRT providers, as onnxruntime-gpu does on a
    machine whose CUDA libraries do not load: the real session then starts without them."""
    import onnxruntime as ort

    from ricecli.inference import engine as engine_mod

    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setenv("RICENET_CACHE", str(tmp_path / "cache" / "nested"))
    engine_mod.forget_engines()
    yield tmp_path / "cache" / "nested"
    engine_mod.forget_engines()


def test_provider_policy_cuda_by_default_tensorrt_only_when_asked():
    import onnxruntime as ort

    assert providers_for("cpu", [TRT, CUDA, CPU]) == [CPU]
    assert providers_for("auto", [TRT, CUDA, CPU]) == [CUDA, CPU]  # never TensorRT unasked
    assert providers_for("cuda", [TRT, CUDA, CPU]) == [CUDA, CPU]
    assert providers_for("tensorrt", [TRT, CUDA, CPU]) == [TRT, CUDA, CPU]
    assert providers_for("auto", [CPU]) == [CPU]
    here = ort.get_available_providers()
    assert providers_for("auto", here) == ([CUDA, CPU] if CUDA in here else [CPU])


def test_auto_falls_back_to_cpu_in_one_stderr_line(tiny_model, gpu_listed, capfd):
    engine = open_engine(load_model(tiny_model), "auto")
    out, err = capfd.readouterr()
    assert engine.requested == [CUDA, CPU]  # TensorRT is listed but was not asked for
    assert engine.providers == ["CPUExecutionProvider"] == engine.session.get_providers()
    assert engine.name == "onnxruntime-cpu"
    assert engine.fallback == ("onnxruntime did not load its CUDA provider: no NVIDIA GPU found; "
                               "running on CPU")
    assert out == ""  # nothing on stdout: `--json -` stays JSON
    assert err.strip().splitlines() == [f"warning: {engine.fallback}"]
    assert "fell back: onnxruntime did not load" in describe(engine)
    probs, _ = engine.run(_volumes(1))
    assert probs.shape == (1, 2)
    from ricecli.inference.gpu import GPU_LIBRARIES

    assert GPU_LIBRARIES.peek("missing") == []  # preload_dlls ran (quietly) before the CUDA session


def test_cuda_or_tensorrt_asked_but_not_loaded_exit_2(tiny_model, gpu_listed, capfd):
    model = load_model(tiny_model)
    with pytest.raises(RicenetError) as cuda:
        open_engine(model, "cuda")
    assert str(cuda.value) == (
        "onnxruntime did not load its CUDA provider: no NVIDIA GPU found. Fix: check that "
        "nvidia-smi shows the GPU (driver loaded, CUDA_VISIBLE_DEVICES), or use --device cpu")
    with pytest.raises(RicenetError, match="did not load its TensorRT provider"):
        open_engine(model, "tensorrt")
    assert capfd.readouterr().out == ""
    # the TensorRT provider's engine cache was made, nested, and keyed by the model's bytes
    made = list((gpu_listed / "ort-trt").iterdir())
    assert len(made) == 1 and made[0].name.startswith(model.sha256 + "-")
    assert (made[0] / ".lock").is_file()


@pytest.mark.slow
def test_json_stdout_stays_json_when_a_provider_fails(tiny_model, synthetic_case, gpu_listed,
                                                      capfd):
    import json

    from model_fixtures import run_cli

    args = ["classify", "--t1", str(synthetic_case["post_op"]), "--t1",
            str(synthetic_case["event"]), "--dose", str(synthetic_case["dose"]), "--model",
            str(tiny_model), "--device", "auto", "--json", "-"]
    code, out, err = run_cli(args, capfd)
    assert code == 0, err
    record = json.loads(out)  # stdout is the JSON record and nothing else
    assert record["engine"]["name"] == "onnxruntime-cpu"
    assert record["engine"]["fallback"].startswith("onnxruntime did not load its CUDA provider")
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "EP Error" not in err and "UserWarning" not in err


def test_engine_cache_key_and_folder(tmp_path):
    from ricecli.inference.engine_cache import engine_cache_dir, engine_cache_key

    sha_a, sha_b = "a" * 64, "b" * 64
    versions = {"ort": "1.27.0", "trt": "10.13.3.9"}
    key = engine_cache_key(sha_a, "NVIDIA H200-sm9.0", versions)
    assert key == f"{sha_a}-NVIDIA-H200-sm9.0-ort1.27.0-trt10.13.3.9"
    assert engine_cache_key(sha_b, "NVIDIA H200-sm9.0", versions) != key  # retrained weights
    assert engine_cache_key(sha_a, "NVIDIA L4-sm8.9", versions) != key  # another GPU
    assert engine_cache_key(sha_a, "NVIDIA H200-sm9.0", {**versions, "trt": "11.1"}) != key
    with pytest.raises(ValueError):
        engine_cache_key("not-a-digest", "gpu", versions)
    root = tmp_path / "a" / "b"  # ORT itself creates one level only
    folder = engine_cache_dir(sha_a, "gpu", versions, root=root)
    assert folder.is_dir() and folder == root / "ort-trt" / engine_cache_key(sha_a, "gpu",
                                                                              versions)
    assert engine_cache_dir(sha_a, "gpu", versions, root=root) == folder  # exists: fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(RicenetError, match="RICENET_CACHE"):
        engine_cache_dir(sha_a, "gpu", versions, root=tmp_path / "file")


def _hold_cache_lock(root: str, log: str, seconds: float) -> None:
    import time

    from ricecli.inference.engine_cache import cache_lock, engine_cache_dir

    folder = engine_cache_dir("c" * 64, "gpu", {"ort": "x"}, root=Path(root))
    with cache_lock(folder):
        with open(log, "a") as f:
            f.write(f"in {time.monotonic()}\n")
        time.sleep(seconds)
        with open(log, "a") as f:
            f.write(f"out {time.monotonic()}\n")


def test_two_processes_share_a_cache_folder_one_at_a_time(tmp_path):
    import multiprocessing as mp

    log = tmp_path / "log"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hold_cache_lock, args=(str(tmp_path / "root"), str(log), 0.5))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    events = [ln.split() for ln in log.read_text().splitlines()]
    assert [e[0] for e in events] == ["in", "out", "in", "out"]  # never both inside
    assert float(events[2][1]) >= float(events[1][1])


def test_tensorrt_provider_gets_profiles_and_the_keyed_cache(tiny_model, tmp_path):
    from ricecli.inference.batches import GPU_BATCH_BYTES, batch_limit
    from ricecli.inference.engine_cache import trt_provider_options

    model = load_model(tiny_model)
    opts = trt_provider_options(model, tmp_path)
    top = batch_limit(model, GPU_BATCH_BYTES)
    chw = "3x" + "x".join(map(str, TINY_SPEC.model_space.shape_zyx))
    assert opts["trt_profile_min_shapes"] == f"volumes:1x{chw}"
    assert opts["trt_profile_opt_shapes"] == f"volumes:{min(top, 16)}x{chw}"
    assert opts["trt_profile_max_shapes"] == f"volumes:{top}x{chw}"
    assert opts["trt_engine_cache_path"] == str(tmp_path) and opts["trt_fp16_enable"] == "False"


def test_gpu_failures_become_one_line_with_a_fix():
    from ricecli.inference.gpu import gpu_error

    oom = gpu_error("CUDA failure 2: out of memory ; GPU=0 ; hostname=x ; file=cuda_call.cc ; "
                    "line=10 ; expr=cudaMalloc(&p, bytes);")
    assert str(oom) == ("out of GPU memory (CUDA failure 2: out of memory). Fix: close other "
                        "programs on the GPU (nvidia-smi lists them), use a smaller --batch, or "
                        "use --device cpu")
    no_gpu = gpu_error("CUDA failure 100: no CUDA-capable device is detected ; GPU=-1")
    assert str(no_gpu).startswith("no usable NVIDIA GPU (CUDA failure 100") and "--device cpu" \
        in str(no_gpu)
    libs = gpu_error("CUDA_PATH is set but CUDA wasnt able to be loaded. Please install the "
                     "correct version of CUDA and cuDNN")
    assert str(libs).startswith("CUDA libraries not found") and "ricecli[gpu]" in str(libs)
    libs2 = gpu_error('Error loading "libonnxruntime_providers_cuda.so" which depends on '
                      '"libcudnn.so.9" which is missing.')
    assert libs2.problem.startswith("CUDA libraries not found")
    engine = gpu_error("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Version "
                       "tag does not match. Note: Current Version: 236, Serialized Engine "
                       "Version: 239)")
    assert isinstance(engine, ModelError) and "another GPU or TensorRT version" in str(engine)
    assert gpu_error("Invalid input name: volumes2") is None


def test_tensorrt_missing_names_the_tensorrt_extra():
    """What onnxruntime-gpu 1.31.1 said on the H200 without TensorRT (gpu_check.log, 2026-12-04):
    it was reported as a CUDA problem ("check nvidia-smi") although CUDA ran fine."""
    from ricecli.inference.gpu import gpu_error, provider_error

    raised = ("/onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc:729 void "
              "onnxruntime::python::RegisterTensorRTPluginsAsCustomOps(PySessionOptions&, const "
              "onnxruntime::ProviderOptions&)")
    logged = ("Failed to load library /tmp/site/onnxruntime/capi/libonnxruntime_providers_"
              "tensorrt.so with error: libnvinfer.so.10: cannot open shared object file: No such "
              "file or directory")
    for text in (raised, logged):
        err = gpu_error(text)
        assert err is not None and err.problem.startswith("TensorRT is not installed")
        assert "ricecli[tensorrt]" in err.fix and "--device cuda" in err.fix
    err = provider_error(raised, ["TensorrtExecutionProvider", "CUDAExecutionProvider"], "m.onnx")
    assert "nvidia-smi" not in str(err) and "ricecli[tensorrt]" in str(err)


def test_cuda_runtime_codes_and_versions():
    from ricecli.inference.cuda import check_cuda_versions, cuda_error

    assert isinstance(cuda_error(2, "cudaMalloc of 512 MiB"), RicenetError)
    assert str(cuda_error(2, "cudaMalloc of 512 MiB")).startswith(
        "out of GPU memory (cudaMalloc of 512 MiB). Fix:")
    assert "no usable NVIDIA GPU" in str(cuda_error(100, "cudaStreamCreate"))
    assert type(cuda_error(700, "cudaStreamSynchronize")) is RuntimeError  # a real bug: exit 1
    check_cuda_versions("13.0.1", 13000)
    with pytest.raises(RicenetError, match="cuda-python 12.9.1 is for CUDA 12"):
        check_cuda_versions("12.9.1", 12080)
    with pytest.raises(RicenetError, match="driver supports CUDA 12.8, cuda-python needs CUDA 13"):
        check_cuda_versions("13.0.0", 12080)


def test_engine_io_description_is_checked():
    from ricecli.inference.tensorrt import check_engine_io

    good = {"volumes": ("INPUT", "FLOAT"), "probabilities": ("OUTPUT", "FLOAT"),
            "member_probabilities": ("OUTPUT", "FLOAT")}
    check_engine_io(good, "m.engine")
    with pytest.raises(ModelError, match="'probabilities' is HALF; ricecli feeds and reads "
                                         "float32 only"):
        check_engine_io({**good, "probabilities": ("OUTPUT", "HALF")}, "m.engine")
    with pytest.raises(ModelError, match="'volumes' is an output, ricecli needs it as an input"):
        check_engine_io({**good, "volumes": ("OUTPUT", "FLOAT")}, "m.engine")
    with pytest.raises(ModelError, match="expected 'volumes'"):
        check_engine_io({k: v for k, v in good.items() if k != "volumes"}, "m.engine")
    with pytest.raises(ModelError, match="input 'mask' that ricecli does not feed"):
        check_engine_io({**good, "mask": ("INPUT", "FLOAT")}, "m.engine")


def test_engine_target_is_checked_from_the_sidecar():
    from ricecli.inference.tensorrt import check_engine_target

    side = {"tensorrt_version": "10.13.3.9", "gpu": {"name": "NVIDIA L4",
                                                     "compute_capability": "8.9"}}
    check_engine_target(side, "10.13.3.9", "8.9", "m.engine")
    with pytest.raises(ModelError, match="built with TensorRT 10.13.3.9, this is 11.1.0"):
        check_engine_target(side, "11.1.0", "8.9", "m.engine")
    with pytest.raises(ModelError, match=r"another GPU \(NVIDIA L4, compute capability 8.9\); "
                                         "this GPU has 9.0"):
        check_engine_target(side, "10.13.3.9", "9.0", "m.engine")
    check_engine_target({"gpu": {"compute_capability": "unknown"}}, "10.13.3.9", "9.0", "m")


def test_device_buffers_are_reused_not_reallocated():
    from ricecli.inference.cuda import DeviceBuffers

    held: dict[int, np.ndarray] = {}  # real host memory standing for device memory

    def alloc(nbytes: int) -> int:
        buf = np.empty(nbytes, np.uint8)
        held[buf.ctypes.data] = buf
        return buf.ctypes.data

    buffers = DeviceBuffers(alloc, lambda ptr: held.pop(ptr))
    first = buffers.get("volumes", 4096)
    for nbytes in (4096, 1024, 4096, 16):  # the same or smaller: the same memory
        assert buffers.get("volumes", nbytes) == first
    assert buffers.allocations == 1 and len(held) == 1
    buffers.get("volumes", 8192)  # larger: the old one is freed, one new
    assert buffers.allocations == 2 and len(held) == 1
    buffers.get("probabilities", 8)
    buffers.close()
    assert held == {}


def test_preload_messages_and_install_checks():
    from ricecli.inference.gpu import missing_libraries, not_loaded
    from ricecli.runtime import onnxruntime_builds

    said = ("Failed to load /venv/lib/nvidia/cudnn/lib/libcudnn.so.9: libcudnn.so.9: cannot "
            "open shared object file\\nFailed to load libcublasLt.so.13: not found\\nPlease "
            "follow the install guide\\n").replace("\\n", "\n")
    assert missing_libraries(said) == ["libcublasLt.so.13", "libcudnn.so.9"]
    problem, fix = not_loaded(CUDA, "cuda", [], ["onnxruntime", "onnxruntime-gpu"], "L4-sm8.9")
    assert "onnxruntime and onnxruntime-gpu are both installed" in problem
    assert fix == ("pip uninstall -y onnxruntime onnxruntime-gpu, then pip install "
                   "'ricecli[gpu]'")
    problem, _ = not_loaded(CUDA, "cuda", ["libcudnn.so.9"], ["onnxruntime-gpu"], "L4-sm8.9")
    assert problem.endswith("CUDA libraries not found (libcudnn.so.9)")
    assert len(onnxruntime_builds()) == 1  # this environment has one ONNX Runtime, not two


def test_a_provider_that_raises_is_a_provider_error_auto_can_fall_back_from():
    """ORT raises (rather than skipping the provider) when CUDA_PATH is set but CUDA does not
    load; that message becomes a ProviderError, which `auto` turns into a CPU fallback and
    `cuda` into exit 2. (A CPU build of ORT cannot raise it, so the text is ORT's own.)"""
    from ricecli.inference.gpu import ProviderError, provider_error

    text = ("CUDA_PATH is set but CUDA wasn't able to be loaded. Please install the correct "
            "version of CUDA and cuDNN as mentioned in the GPU requirements page")
    err = provider_error(text, [CUDA, CPU], "m.onnx")
    assert isinstance(err, ProviderError) and err.problem.startswith("CUDA libraries not found")
    other = provider_error("some new failure", [TRT, CUDA, CPU], "m.onnx")
    assert isinstance(other, ProviderError)
    assert other.problem == "onnxruntime could not start its TensorRT provider (some new failure)"
    cpu = provider_error("Protobuf parsing failed.", [CPU], "m.onnx")
    assert isinstance(cpu, ModelError) and not isinstance(cpu, ProviderError)


def test_cuda_sessions_compute_fp32_without_tf32():
    """On an H200, ORT's default CUDA options (TF32 allowed) moved member probabilities 2.7e-4
    from the CPU's; with use_tf32=0 they agreed to 6.6e-7 (benchmarks/results/gpu_h200_*)."""
    from ricecli.inference.gpu import CUDA_EP
    from ricecli.inference.onnx import _provider_options

    cuda = dict(p for p in _provider_options([CUDA_EP, "CPUExecutionProvider"])
                if isinstance(p, tuple))
    assert cuda[CUDA_EP]["use_tf32"] == "0"
