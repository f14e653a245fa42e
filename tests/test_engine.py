"""ricecli.inference.engine: ONNX Runtime sessions agree with torch, split batches, pick devices."""

from __future__ import annotations

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

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


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


def test_available_engines_are_this_onnxruntimes_providers():
    import onnxruntime as ort

    have = ort.get_available_providers()
    assert available_engines() == {"onnxruntime-cpu": CPU in have,
                                   "onnxruntime-cuda": CUDA in have,
                                   "onnxruntime-tensorrt": TRT in have}
    assert available_engines()["onnxruntime-cpu"] is True


def test_same_outputs_whatever_the_thread_count(tiny_model):
    """Sessions really opened with session_options at 1 and 2 intra-op threads agree bit for
    bit (ORT's CPU kernels split work across threads, not sums)."""
    model = load_model(tiny_model)
    x = _volumes(4, seed=3)
    one = OnnxRuntimeEngine(model, threads=1)
    two = OnnxRuntimeEngine(model, threads=2)
    assert (one.threads, two.threads) == (1, 2)
    for a, b in zip(one.run(x), two.run(x), strict=True):
        np.testing.assert_array_equal(a, b)


# --- issue 16: the GPU paths, tested without a GPU ------------------------------------------

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
    assert engine.fallback == ("onnxruntime did not load its CUDA provider (no usable NVIDIA GPU, "
                               "or its CUDA/cuDNN libraries did not load); running on CPU")
    assert out == ""  # nothing on stdout: `--json -` stays JSON
    assert err.strip().splitlines() == [f"warning: {engine.fallback}"]
    assert "fell back: onnxruntime did not load" in describe(engine)
    probs, _ = engine.run(_volumes(1))
    assert probs.shape == (1, 2)
    from ricecli.inference.gpu import preload_gpu_libraries

    assert preload_gpu_libraries.cache_info().currsize == 1  # ran (quietly) before the session


def test_cuda_or_tensorrt_asked_but_not_loaded_exit_2(tiny_model, gpu_listed, capfd):
    model = load_model(tiny_model)
    with pytest.raises(RicenetError) as cuda:
        open_engine(model, "cuda")
    assert str(cuda.value) == (
        "onnxruntime did not load its CUDA provider (no usable NVIDIA GPU, or its CUDA/cuDNN "
        "libraries did not load). Fix: check that nvidia-smi shows the GPU and that "
        "'ricecli[gpu]' is installed (it brings the CUDA libraries), or use --device cpu")
    with pytest.raises(RicenetError, match="did not load its TensorRT provider") as trt:
        open_engine(model, "tensorrt")
    assert "ricecli[tensorrt]" in trt.value.fix
    assert capfd.readouterr().out == ""
    # the TensorRT provider's engine cache was made under RICENET_CACHE (nested), per sha256
    assert [p.name for p in (gpu_listed / "ort-trt").iterdir()] == [model.sha256]
    assert (gpu_listed / "ort-trt" / model.sha256 / ".lock").is_file()


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


def test_cache_root_honours_ricenet_cache_and_an_empty_one_is_unset(monkeypatch, tmp_path):
    from ricecli.inference.gpu import engine_cache_dir
    from ricecli.runtime import cache_root

    monkeypatch.setenv("RICENET_CACHE", str(tmp_path / "a" / "b"))
    assert cache_root() == tmp_path / "a" / "b"
    folder = engine_cache_dir("a" * 64)  # ORT itself creates one level only
    assert folder == tmp_path / "a" / "b" / "ort-trt" / ("a" * 64) and folder.is_dir()
    assert engine_cache_dir("a" * 64) == folder  # exists: fine
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv("RICENET_CACHE")
        else:
            monkeypatch.setenv("RICENET_CACHE", unset)
        assert cache_root() == tmp_path / "home" / ".cache" / "ricenet"  # never the cwd
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("RICENET_CACHE", str(tmp_path / "file"))
    with pytest.raises(RicenetError, match="RICENET_CACHE"):
        engine_cache_dir("b" * 64)


def _hold_cache_lock(root: str, log: str, seconds: float) -> None:
    import os
    import time

    from ricecli.inference.gpu import cache_lock, engine_cache_dir

    os.environ["RICENET_CACHE"] = root
    with cache_lock(engine_cache_dir("c" * 64)):
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


def test_provider_options_per_device(tiny_model, monkeypatch, tmp_path):
    """CUDA computes fp32 as fp32 (on an H200, TF32 moved member probabilities 2.7e-4 from the
    CPU's; without it 6.6e-7); the TensorRT provider builds one engine for batches 1..max
    (optimum: explain's batch 16) into the model's cache folder; the CPU takes no options."""
    from ricecli.inference.engine import GPU_BATCH_BYTES, batch_limit, session_providers

    monkeypatch.setenv("RICENET_CACHE", str(tmp_path))
    model = load_model(tiny_model)
    listed = session_providers(model, [TRT, CUDA, CPU])
    assert listed[2] == CPU and listed[1] == (CUDA, {"use_tf32": "0"})
    name, trt = listed[0]
    top = batch_limit(model, GPU_BATCH_BYTES)
    chw = "3x" + "x".join(map(str, TINY_SPEC.model_space.shape_zyx))
    assert name == TRT and trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "ort-trt" / model.sha256)
    assert (trt["trt_profile_min_shapes"], trt["trt_profile_opt_shapes"],
            trt["trt_profile_max_shapes"]) == (f"volumes:1x{chw}", f"volumes:{min(top, 16)}x{chw}",
                                               f"volumes:{top}x{chw}")
    assert trt["trt_fp16_enable"] == "False"


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


def test_preload_messages_and_install_checks():
    from ricecli.inference.gpu import missing_libraries, not_loaded
    from ricecli.runtime import onnxruntime_builds

    said = ("Failed to load /venv/lib/nvidia/cudnn/lib/libcudnn.so.9: libcudnn.so.9: cannot "
            "open shared object file\\nFailed to load libcublasLt.so.13: not found\\nPlease "
            "follow the install guide\\n").replace("\\n", "\n")
    assert missing_libraries(said) == ["libcublasLt.so.13", "libcudnn.so.9"]
    problem, fix = not_loaded(CUDA, [], ["onnxruntime", "onnxruntime-gpu"])
    assert "onnxruntime and onnxruntime-gpu are both installed" in problem
    assert fix == ("pip uninstall -y onnxruntime onnxruntime-gpu, then pip install "
                   "'ricecli[gpu]'")
    problem, _ = not_loaded(CUDA, ["libcudnn.so.9"], ["onnxruntime-gpu"])
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
