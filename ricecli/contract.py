"""The model contract: what a ricenet model file must hold, in one place.

An ONNX model has one float32 input `volumes` [N, C, D, H, W] and two float32 outputs,
`probabilities` [N, 2] and `member_probabilities` [N, M, 2], in the spec's class order; its
metadata_props hold the spec (`ricenet.spec`) and the model card (`ricenet.card`), both JSON.

ricecli reads models through this module; export/to_onnx.py writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ricecli.errors import ModelError
from ricecli.spec import Spec

INPUT_NAME = "volumes"
OUTPUT_NAMES = ("probabilities", "member_probabilities")
SPEC_KEY = "ricenet.spec"  # ONNX metadata_props and safetensors metadata key
CARD_KEY = "ricenet.card"  # model card: members, metrics, training summary, hashes

Dims = list[Any]  # a tensor shape as ONNX Runtime lists it: ints, names or None
REEXPORT = "re-export the model with export/to_onnx.py"


def metadata(spec: Spec, card: dict[str, Any]) -> dict[str, str]:
    """The metadata_props an exported ONNX model carries."""
    return {SPEC_KEY: spec.to_json(), CARD_KEY: json.dumps(card)}


def parse_spec(value: object, path: Path) -> Spec:
    """The spec from metadata (JSON text, or the object it holds)."""
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
