"""The spec: everything preparation and inference need to agree on, as a small JSON object.

It travels inside every checkpoint and ONNX model; the inference side reads preprocessing
from it and hard-codes nothing.

Array convention: volumes are numpy arrays in SimpleITK order (z, y, x); the model input
is [N, C, D, H, W] = [N, C, z, y, x]. `size_xyz` is SimpleITK's (x, y, z) size.
World coordinates are DICOM/ITK patient LPS millimetres.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

CHANNELS = ("post_op", "event", "dose")
CLASSES = ("RICE", "recurrence")
SPEC_KEY = "ricenet.spec"  # ONNX metadata_props / safetensors metadata key
CARD_KEY = "ricenet.card"  # model card: members, metrics, training summary, hashes


@dataclass(frozen=True)
class Calibration:
    """How to turn the members' softmax outputs into calibrated probabilities (fit on
    out-of-fold data by `python -m train fit`; applied by ricecli/inference/calibration.py).

    method "temperature": each member's logits (recovered as log-probabilities, floored at
    `prob_floor`) are divided by `temperature`, softmaxed, then the members are averaged.
    `conformal_qhat` (split conformal on the same out-of-fold scores, miscoverage
    `conformal_alpha`) decides which labels a case's prediction set holds.
    """

    method: str = "temperature"
    temperature: float = 1.0
    prob_floor: float = 1e-7
    conformal_alpha: float | None = None
    conformal_qhat: float | None = None
    fitted_on: str = "out-of-fold cross-validation predictions"
    n_cases: int = 0

    def __post_init__(self) -> None:
        if self.method != "temperature" or not self.temperature > 0:
            raise ValueError(f"calibration must be method 'temperature' with a positive "
                             f"temperature, got {self.method!r}, {self.temperature!r}")

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class ModelSpace:
    """A canonical axis-aligned grid (identity direction, LPS) in the template's world frame."""

    template: str = "mni_icbm152_2009a_sym"
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)
    size_xyz: tuple[int, int, int] = (56, 64, 56)
    center_mm: tuple[float, float, float] = (0.0, 17.0, 7.0)

    @property
    def origin_mm(self) -> tuple[float, float, float]:
        """World position of voxel (0, 0, 0)."""
        axes = zip(self.center_mm, self.spacing_mm, self.size_xyz, strict=True)
        return tuple(c - s * (n - 1) / 2.0 for c, s, n in axes)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(reversed(self.size_xyz))


@dataclass(frozen=True)
class Spec:
    """Channels, model space and normalisation shared by training, export and inference."""

    channels: tuple[str, ...] = CHANNELS
    model_space: ModelSpace = field(default_factory=ModelSpace)
    t1_normalisation: str = "zscore_in_brain"
    dose_scale_gy: float = 60.0
    classes: tuple[str, str] = CLASSES
    preset: str = "edge"
    version: int = 1
    calibration: Calibration | None = None  # None: uncalibrated (models exported before it)

    def __post_init__(self) -> None:
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown or not self.channels or len(set(self.channels)) != len(self.channels):
            raise ValueError(
                f"channels must be a non-empty subset of {CHANNELS}, got {self.channels}")

    def with_channels(self, channels: tuple[str, ...]) -> Spec:
        d = asdict(self)
        d["channels"] = tuple(channels)
        return Spec.from_dict(d)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["calibration"] is None:  # uncalibrated specs keep their old JSON byte for byte
            d.pop("calibration")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> Spec:
        ms = d.get("model_space", {})
        space = ModelSpace(
            template=ms.get("template", ModelSpace.template),
            spacing_mm=tuple(float(v) for v in ms["spacing_mm"]),
            size_xyz=tuple(int(v) for v in ms["size_xyz"]),
            center_mm=tuple(float(v) for v in ms["center_mm"]),
        )
        return cls(
            channels=tuple(d["channels"]),
            model_space=space,
            t1_normalisation=d.get("t1_normalisation", "zscore_in_brain"),
            dose_scale_gy=float(d["dose_scale_gy"]),
            classes=tuple(d.get("classes", CLASSES)),
            preset=d.get("preset", "edge"),
            version=int(d.get("version", 1)),
            calibration=Calibration.from_dict(d["calibration"]) if d.get("calibration")
            else None,
        )

    @classmethod
    def from_json(cls, text: str) -> Spec:
        return cls.from_dict(json.loads(text))

    def cache_key(self) -> str:
        """What preparation depends on (not channels: preparation always makes all three)."""
        d = self.to_dict()
        d.pop("channels")
        d.pop("classes")
        d.pop("preset")
        d.pop("calibration", None)  # applied after inference; preparation does not use it
        return json.dumps(d, sort_keys=True)


PRESETS: dict[str, Spec] = {
    # CPU-friendly default: 3 mm, 56x64x56 covers the whole template brain (168x192x168 mm).
    "edge": Spec(preset="edge"),
    # The paper: 1 mm isotropic, 224^3.
    "paper": Spec(
        preset="paper",
        model_space=ModelSpace(spacing_mm=(1.0, 1.0, 1.0), size_xyz=(224, 224, 224)),
    ),
}


def preset_spec(name: str) -> Spec:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
