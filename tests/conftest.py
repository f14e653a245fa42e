"""Shared fixtures: the real sample files beside the checkout, and small real volumes."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: a user's clone does not have it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample files not found at {SHARED_DATA} (only CI and devs have them)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny real ricenet ONNX model (2-member MONAI ResNet-18 ensemble, 6 mm 24x28x24)."""
    from model_fixtures import export_tiny_model

    return export_tiny_model(tmp_path_factory.mktemp("model") / "ricenet-tiny.onnx")


@pytest.fixture(scope="session")
def synthetic_case(tmp_path_factory) -> dict:
    """post_op, event, dose NIfTI files of a synthetic case (moved template + lesion + dose)."""
    from model_fixtures import write_case

    return write_case(tmp_path_factory.mktemp("case"))


@pytest.fixture(scope="session")
def nbia_tree(tmp_path_factory):
    """tests/cohort_tree.py's NBIA-layout export of four patients, and its truth (built once per
    session, ~10 s: the cohort and study tests share it)."""
    from cohort_tree import build_tree

    return build_tree(tmp_path_factory.mktemp("export") / "tree", "nbia")
