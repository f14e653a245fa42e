"""Find and load a ricenet ONNX model: the spec and card in its metadata_props, checked against
contract.py. Nothing about preprocessing is hard-coded here: it all comes from the model's spec."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ricecli.contract import CARD_KEY, SPEC_KEY, check_io, parse_card, parse_spec
from ricecli.errors import ModelError
from ricecli.memo import process_cache
from ricecli.runtime import CPU_EP, import_onnxruntime, session_options
from ricecli.spec import Spec


@dataclass(frozen=True)
class LoadedModel:
    """A model file with its spec and card, checked against the I/O contract."""

    path: Path
    spec: Spec
    card: dict[str, Any]
    sha256: str
    name: str
    version: str
    members: int | None = None  # ensemble size when the graph or card says it
    fixed_batch: int | None = None  # the batch size when the graph fixes it
    format: ClassVar[str] = "onnx"  # the only one; results record it

    def __hash__(self) -> int:
        """A file version is one model (engines are cached per model and device)."""
        return hash((self.path, self.sha256))

    def summary(self) -> dict[str, str]:
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
                fix="pass --model PATH to a ricenet ONNX model (made by export/to_onnx.py)",
            )
        return default
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError("model file not found", path,
                         fix="check the --model path (a ricenet .onnx file)")
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
    """Load the spec and card of a model (default: the shipped one) and check its I/O; once
    per file version (path, mtime, size) and process."""
    path = resolve_model_path(path).resolve()
    stat = path.stat()
    return _load(path, stat.st_mtime_ns, stat.st_size)


@process_cache(maxsize=8)
def _load(path: Path, mtime_ns: int, size: int) -> LoadedModel:
    ort = import_onnxruntime()  # a missing ORT is a one-line exit 2
    try:
        session = ort.InferenceSession(str(path), session_options(optimize=False),
                                       providers=[CPU_EP])
    except Exception as err:  # noqa: BLE001 - ORT raises several unrelated types
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ModelError(f"not a readable ONNX model ({first})", path,
                         fix="pass a ricenet .onnx made by export/to_onnx.py") from None
    meta = session.get_modelmeta().custom_metadata_map
    if SPEC_KEY not in meta:
        raise ModelError(f"ONNX model without ricenet metadata (no {SPEC_KEY!r} in metadata_props)",
                         path, fix="export it with export/to_onnx.py, which writes the spec "
                         "and model card into the file")
    spec = parse_spec(meta[SPEC_KEY], path)
    card = parse_card(meta.get(CARD_KEY), path)
    inputs = [(i.name, i.shape) for i in session.get_inputs()]
    outputs = [(o.name, o.shape) for o in session.get_outputs()]
    members, fixed_batch = check_io(spec, inputs, outputs, path)
    return LoadedModel(path=path, spec=spec, card=card, sha256=file_sha256(path),
                       name=str(card.get("name") or path.stem),
                       version=str(card.get("version") or "unversioned"),
                       members=members or card_members(card), fixed_batch=fixed_batch)


def card_members(card: dict[str, Any]) -> int | None:
    """Ensemble size from the card's `members` (a count or a list), if given."""
    m = card.get("members")
    if isinstance(m, int):
        return m
    if isinstance(m, list):
        return len(m)
    return None
