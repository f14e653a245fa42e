"""Find and load a ricenet model: an ONNX file (spec + card in its metadata_props) or a
TensorRT `.engine` with its JSON sidecar. Nothing about preprocessing is hard-coded here:
it all comes from the spec the model carries."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ricecli.errors import ModelError
from ricecli.inference.spec import CARD_KEY, SPEC_KEY, Spec

INPUT_NAME = "volumes"
OUTPUT_NAMES = ("probabilities", "member_probabilities")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


@dataclass(frozen=True)
class LoadedModel:
    """A model file with its spec and card, checked against the I/O contract."""

    path: Path
    spec: Spec
    card: dict
    sha256: str
    name: str
    version: str
    format: str = "onnx"  # "onnx" or "tensorrt"
    members: int | None = None  # ensemble size when the graph or card says it
    fixed_batch: int | None = None  # the batch size when the graph fixes it
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def summary(self) -> dict:
        """Name, version and hash: what a result must record to be reproducible."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256,
                "path": str(self.path), "format": self.format}


def default_model_path() -> Path:
    """Where the shipped default model lives inside the package (the default-model issue)."""
    return Path(__file__).resolve().parents[1] / "data" / "model" / "ricenet-edge.onnx"


def resolve_model_path(path: str | Path | None) -> Path:
    """The given model path, or the shipped default; a clear error when neither exists."""
    if path is None:
        default = default_model_path()
        if not default.is_file():
            raise ModelError(
                "no model given and no default model is shipped with this ricecli",
                fix="pass --model PATH to a ricenet ONNX model (made by export/to_onnx.py) "
                "or a TensorRT .engine with its .json sidecar",
            )
        return default
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError("model file not found", path,
                         fix="check the --model path (a ricenet .onnx or .engine file)")
    if path.is_dir():
        raise ModelError("model path is a folder, not a model file", path,
                         fix="pass the .onnx file itself")
    return path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks (models may be tens of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(path: str | Path | None = None) -> LoadedModel:
    """Load the spec and card of a model (default: the shipped one) and check its I/O."""
    path = resolve_model_path(path).resolve()
    stamp = [(p.stat().st_mtime_ns, p.stat().st_size)
             for p in (path, sidecar_path(path)) if p.is_file()]
    return _load_cached(path, tuple(stamp))


@lru_cache(maxsize=8)
def _load_cached(path: Path, _stamp: tuple) -> LoadedModel:
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return _load_engine(path)
    return _load_onnx(path)


def _parse_spec(text: object, path: Path) -> Spec:
    try:
        data = json.loads(text) if isinstance(text, str) else text
        return Spec.from_dict(data)
    except (ValueError, KeyError, TypeError) as err:
        raise ModelError(f"the model's {SPEC_KEY} metadata is not a valid spec ({err})", path,
                         fix="re-export the model with export/to_onnx.py") from None


def _parse_card(text: object, path: Path) -> dict:
    if text is None or text == "":
        return {}
    try:
        card = json.loads(text) if isinstance(text, str) else text
    except ValueError as err:
        raise ModelError(f"the model's {CARD_KEY} metadata is not JSON ({err})", path,
                         fix="re-export the model with export/to_onnx.py") from None
    if not isinstance(card, dict):
        raise ModelError(f"the model's {CARD_KEY} metadata is not a JSON object", path,
                         fix="re-export the model with export/to_onnx.py")
    return card


def _card_identity(card: dict, path: Path) -> tuple[str, str]:
    name = str(card.get("name") or path.stem)
    version = str(card.get("version") or "unversioned")
    return name, version


def _load_onnx(path: Path) -> LoadedModel:
    from ricecli.inference.engine import import_onnxruntime  # a missing ORT is a one-line exit 2

    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ORT raises several unrelated types
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ModelError(f"not a readable ONNX model ({first})", path,
                         fix="pass a ricenet .onnx made by export/to_onnx.py") from None
    meta = session.get_modelmeta().custom_metadata_map
    if SPEC_KEY not in meta:
        raise ModelError(f"ONNX model without ricenet metadata (no {SPEC_KEY!r} in metadata_props)",
                         path, fix="export it with export/to_onnx.py, which writes the spec "
                         "and model card into the file")
    spec = _parse_spec(meta[SPEC_KEY], path)
    card = _parse_card(meta.get(CARD_KEY), path)
    inputs = [(i.name, i.shape) for i in session.get_inputs()]
    outputs = [(o.name, o.shape) for o in session.get_outputs()]
    members, fixed_batch = check_io(spec, inputs, outputs, path)
    name, version = _card_identity(card, path)
    return LoadedModel(path=path, spec=spec, card=card, sha256=file_sha256(path), name=name,
                       version=version, format="onnx", members=members or card_members(card),
                       fixed_batch=fixed_batch)


def card_members(card: dict) -> int | None:
    """Ensemble size from the card's `members` (a count or a list), if given."""
    m = card.get("members")
    if isinstance(m, int):
        return m
    if isinstance(m, list):
        return len(m)
    return None


def _dim(d: object) -> int | None:
    """A static dimension, or None for a symbolic/unknown one."""
    return d if isinstance(d, int) and d > 0 else None


def check_io(spec: Spec, inputs: list[tuple[str, list]], outputs: list[tuple[str, list]],
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


def _load_engine(path: Path) -> LoadedModel:
    side = sidecar_path(path)
    if not side.is_file():
        alt = path.with_suffix(".json")
        if not alt.is_file():
            raise ModelError("TensorRT engine without its sidecar", path,
                             fix=f"put the {side.name} written by export/to_trt.py beside it")
        side = alt
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"engine sidecar is not readable JSON ({err})", side,
                         fix="re-run export/to_trt.py to rewrite it") from None
    if not isinstance(data, dict):
        raise ModelError("engine sidecar is not a JSON object", side,
                         fix="re-run export/to_trt.py to rewrite it")
    spec_text = data.get(SPEC_KEY, data.get("spec"))
    if spec_text is None:
        raise ModelError(f"engine sidecar has no {SPEC_KEY!r}", side,
                         fix="re-run export/to_trt.py to rewrite it")
    spec = _parse_spec(spec_text, side)
    card = _parse_card(data.get(CARD_KEY, data.get("card")), side)
    name, version = _card_identity(card, path)
    sha = file_sha256(path)
    recorded = (data.get("engine") or {}).get("sha256") if isinstance(data.get("engine"),
                                                                       dict) else None
    if recorded and recorded != sha:
        raise ModelError("the engine file does not match its sidecar (sha256 differs)", path,
                         fix="keep the .engine and its .engine.json from the same "
                         "export/to_trt.py run")
    return LoadedModel(path=path, spec=spec, card=card, sha256=sha, name=name,
                       version=version, format="tensorrt", members=card_members(card),
                       extra={"sidecar": str(side), **{k: v for k, v in data.items()
                                                        if k not in (SPEC_KEY, CARD_KEY)}})
