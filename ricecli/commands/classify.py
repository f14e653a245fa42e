"""`ricecli classify` (not yet built)."""

from __future__ import annotations

from ricecli.errors import RicenetError


def command() -> None:
    """Not built yet."""
    raise RicenetError("'ricecli classify' is not built yet")
