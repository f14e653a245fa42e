"""`ricecli info` (not yet built)."""

from __future__ import annotations

from ricecli.errors import RicenetError


def command() -> None:
    """Not built yet."""
    raise RicenetError("'ricecli info' is not built yet")
