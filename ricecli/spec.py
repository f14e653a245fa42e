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
from typing import Any

CHANNELS = ("post_op", "event", "dose")
CLASSES = ("RICE", "recurrence")


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
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        """The calibration from its JSON object (unknown keys ignored)."""
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
        c, s, n = self.center_mm, self.spacing_mm, self.size_xyz
        return (c[0] - s[0] * (n[0] - 1) / 2.0, c[1] - s[1] * (n[1] - 1) / 2.0,
                c[2] - s[2] * (n[2] - 1) / 2.0)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """The array shape (z, y, x) of a volume on this grid."""
        x, y, z = self.size_xyz
        return (z, y, x)


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
        """This spec with other channels."""
        d = asdict(self)
        d["channels"] = tuple(channels)
        return Spec.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON object."""
        d = asdict(self)
        if d["calibration"] is None:  # uncalibrated specs keep their old JSON byte for byte
            d.pop("calibration")
        return d

    def to_json(self) -> str:
        """The spec as JSON text (sorted keys: the same spec gives the same bytes)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spec:
        """The spec from its JSON object (missing optional fields take their defaults)."""
        ms = d.get("model_space", {})
        spacing, size, center = ms["spacing_mm"], ms["size_xyz"], ms["center_mm"]
        space = ModelSpace(
            template=ms.get("template", ModelSpace.template),
            spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
            size_xyz=(int(size[0]), int(size[1]), int(size[2])),
            center_mm=(float(center[0]), float(center[1]), float(center[2])),
        )
        classes = tuple(d.get("classes", CLASSES))
        if len(classes) != 2 or len(spacing) != 3 or len(size) != 3 or len(center) != 3:
            raise ValueError("a spec needs two classes and 3-D spacing, size and centre")
        return cls(
            channels=tuple(d["channels"]),
            model_space=space,
            t1_normalisation=d.get("t1_normalisation", "zscore_in_brain"),
            dose_scale_gy=float(d["dose_scale_gy"]),
            classes=(str(classes[0]), str(classes[1])),
            preset=d.get("preset", "edge"),
            version=int(d.get("version", 1)),
            calibration=Calibration.from_dict(d["calibration"]) if d.get("calibration")
            else None,
        )

    @classmethod
    def from_json(cls, text: str) -> Spec:
        """The spec from JSON text."""
        return cls.from_dict(json.loads(text))

    def cache_key(self) -> str:
        """What preparation depends on (not channels: preparation always makes all three)."""
        d = self.to_dict()
        d.pop("channels")
        d.pop("classes")
        d.pop("preset")
        d.pop("calibration", None)  # applied after inference; preparation does not use it
        return json.dumps(d, sort_keys=True)


# The one list of presets. ricecli prepares and classifies for these model spaces; training
# and export add TEST_PRESET (train/model.py keeps each preset's network architecture).
PRESETS: dict[str, Spec] = {
    # CPU-friendly default: 3 mm, 56x64x56 covers the whole template brain (168x192x168 mm).
    "edge": Spec(preset="edge"),
    # The paper: 1 mm isotropic, 224^3.
    "paper": Spec(
        preset="paper",
        model_space=ModelSpace(spacing_mm=(1.0, 1.0, 1.0), size_xyz=(224, 224, 224)),
    ),
}


TEST_PRESET = "tiny"  # training only: edge's model space with a very small network (tests)
TRAINING_PRESETS = (*PRESETS, TEST_PRESET)


def preset_spec(name: str) -> Spec:
    """The spec of a preset; the test preset trains on edge's spec."""
    if name == TEST_PRESET:
        return PRESETS["edge"]
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
