"""`ricecli prepare` (not yet built)."""

from __future__ import annotations

from ricecli.errors import RicenetError


def command() -> None:
    """Not built yet."""
    raise RicenetError("'ricecli prepare' is not built yet")
