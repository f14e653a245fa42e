"""The model contract: what a ricenet model file must hold, in one place.

An ONNX model has one float32 input `volumes` [N, C, D, H, W] and two float32 outputs,
`probabilities` [N, 2] and `member_probabilities` [N, M, 2], in the spec's class order; its
metadata_props hold the spec (`ricenet.spec`) and the model card (`ricenet.card`), both JSON.
A TensorRT engine `model.engine` has the same I/O and a JSON sidecar `model.engine.json`:

    format             "ricenet-trt-sidecar/1"
    ricenet.spec       the spec as a JSON object; ricenet.card: the card as a JSON object
    engine             {"file", "sha256", "size_bytes"}; onnx: {"file", "sha256"} of the source
    tensorrt_version   the engine loads only with this exact version
    gpu                {"name", "compute_capability"}; engines are specific to the GPU model
    build, profile     how it was built; profile {"input", "min"/"opt"/"max": [N, C, D, H, W]}
    io                 {"input", "outputs", "dtype": "float32"}: I/O stays float32 even for fp16
    parity             {"max_abs_diff_vs_onnxruntime", "batch", "engine"}
    created            ISO time (UTC)

ricecli reads models through this module; export/to_onnx.py and export/to_trt.py write them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ricecli.errors import ModelError
from ricecli.spec import Spec

INPUT_NAME = "volumes"
OUTPUT_NAMES = ("probabilities", "member_probabilities")
IO_DTYPE = "float32"
SPEC_KEY = "ricenet.spec"  # ONNX metadata_props, safetensors metadata and sidecar key
CARD_KEY = "ricenet.card"  # model card: members, metrics, training summary, hashes
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
SIDECAR_FORMAT = "ricenet-trt-sidecar/1"
ENGINE_CLASS = "ricecli.inference.engine.TensorRTEngine"  # the engine parity is checked with

Dims = list[Any]  # a tensor shape as ONNX Runtime lists it: ints, names or None
REEXPORT = "re-export the model with export/to_onnx.py"


def metadata(spec: Spec, card: dict[str, Any]) -> dict[str, str]:
    """The metadata_props an exported ONNX model carries."""
    return {SPEC_KEY: spec.to_json(), CARD_KEY: json.dumps(card)}


def parse_spec(value: object, path: Path) -> Spec:
    """The spec from metadata (JSON text) or a sidecar (JSON object)."""
    try:
        data = json.loads(value) if isinstance(value, str) else value
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        return Spec.from_dict(data)
    except (ValueError, KeyError, TypeError) as err:
        raise ModelError(f"the model's {SPEC_KEY} metadata is not a valid spec ({err})", path,
                         fix=REEXPORT) from None


def parse_card(value: object, path: Path) -> dict[str, Any]:
    """The model card (JSON text or object); {} when there is none."""
    if value is None or value == "":
        return {}
    try:
        card = json.loads(value) if isinstance(value, str) else value
    except ValueError as err:
        raise ModelError(f"the model's {CARD_KEY} metadata is not JSON ({err})", path,
                         fix=REEXPORT) from None
    if not isinstance(card, dict):
        raise ModelError(f"the model's {CARD_KEY} metadata is not a JSON object", path,
                         fix=REEXPORT)
    return card


def _dim(d: object) -> int | None:
    """A static dimension, or None for a symbolic/unknown one."""
    return d if isinstance(d, int) and d > 0 else None


def check_io(spec: Spec, inputs: list[tuple[str, Dims]], outputs: list[tuple[str, Dims]],
             path: Path) -> tuple[int | None, int | None]:
    """Check names and shapes against the contract; return (members, fixed batch) if static."""
    fix = "re-export with export/to_onnx.py (input 'volumes' [N,C,D,H,W], outputs " \
          "'probabilities' [N,2] and 'member_probabilities' [N,M,2])"
    in_names = [n for n, _ in inputs]
    out_names = [n for n, _ in outputs]
    if in_names != [INPUT_NAME]:
        raise ModelError(f"model inputs are {in_names}, expected ['{INPUT_NAME}']", path, fix=fix)
    missing = [n for n in OUTPUT_NAMES if n not in out_names]
    if missing:
        raise ModelError(f"model outputs are {out_names}, missing {missing}", path, fix=fix)
    shape = list(inputs[0][1] or [])
    want = [len(spec.channels), *spec.model_space.shape_zyx]
    if len(shape) != 5:
        raise ModelError(f"model input has shape {shape}, expected 5-D [N,C,D,H,W]", path, fix=fix)
    for got, exp, axis in zip(shape[1:], want, "CDHW", strict=True):
        if _dim(got) is not None and got != exp:
            raise ModelError(f"model input {axis} is {got} but its spec says {exp} "
                             f"(input [N,C,D,H,W] should be [N,{','.join(map(str, want))}])",
                             path, fix=fix)
    out = dict(outputs)
    probs, member = list(out[OUTPUT_NAMES[0]] or []), list(out[OUTPUT_NAMES[1]] or [])
    if len(probs) != 2 or _dim(probs[1]) not in (None, len(spec.classes)):
        raise ModelError(f"output 'probabilities' has shape {probs}, expected [N,2]", path, fix=fix)
    if len(member) != 3 or _dim(member[2]) not in (None, len(spec.classes)):
        raise ModelError(f"output 'member_probabilities' has shape {member}, expected [N,M,2]",
                         path, fix=fix)
    return _dim(member[1]), _dim(shape[0])


def sidecar_path(engine_path: Path) -> Path:
    """`model.engine` -> `model.engine.json` (the TensorRT sidecar with spec and card)."""
    return engine_path.with_name(engine_path.name + ".json")


def new_sidecar(spec: Spec, card: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A sidecar for an engine: the contract's fixed parts plus `fields` (engine, onnx,
    tensorrt_version, gpu, build, profile, parity batch...), parity not yet measured."""
    batch = fields.pop("parity_batch", None)
    return {"format": SIDECAR_FORMAT, SPEC_KEY: spec.to_dict(), CARD_KEY: card, **fields,
            "io": {"input": INPUT_NAME, "outputs": list(OUTPUT_NAMES), "dtype": IO_DTYPE},
            "parity": {"max_abs_diff_vs_onnxruntime": None, "batch": batch,
                       "engine": ENGINE_CLASS},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def read_sidecar(engine_path: Path, engine_sha256: str) -> tuple[Spec, dict[str, Any],
                                                                  dict[str, Any]]:
    """(spec, card, the other sidecar fields) of an engine, checked against its bytes."""
    side = sidecar_path(engine_path)
    rewrite = "re-run export/to_trt.py to rewrite it"
    if not side.is_file():
        raise ModelError("TensorRT engine without its sidecar", engine_path,
                         fix=f"put the {side.name} written by export/to_trt.py beside it")
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"engine sidecar is not readable JSON ({err})", side,
                         fix=rewrite) from None
    if not isinstance(data, dict):
        raise ModelError("engine sidecar is not a JSON object", side, fix=rewrite)
    if data.get("format", SIDECAR_FORMAT) != SIDECAR_FORMAT:
        raise ModelError(f"engine sidecar format is {data['format']!r}, ricecli reads "
                         f"{SIDECAR_FORMAT!r}", side, fix=rewrite)
    if SPEC_KEY not in data:
        raise ModelError(f"engine sidecar has no {SPEC_KEY!r}", side, fix=rewrite)
    spec, card = parse_spec(data[SPEC_KEY], side), parse_card(data.get(CARD_KEY), side)
    engine = data.get("engine")
    recorded = engine.get("sha256") if isinstance(engine, dict) else None
    if recorded and recorded != engine_sha256:
        raise ModelError("the engine file does not match its sidecar (sha256 differs)",
                         engine_path, fix="keep the .engine and its .engine.json from the same "
                         "export/to_trt.py run")
    rest = {"sidecar": str(side), **{k: v for k, v in data.items()
                                     if k not in (SPEC_KEY, CARD_KEY)}}
    return spec, card, rest
