"""Process-wide caches: functools.lru_cache on plain functions, each registered so that
`clear_all` forgets them together (tests and benchmarks that open many models or engines)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
CACHES: list[Any] = []  # the lru_cache wrappers made by process_cache


def process_cache(maxsize: int | None = None) -> Callable[[F], F]:
    """functools.lru_cache(maxsize) on a function, registered for clear_all."""

    def wrap(function: F) -> F:
        cached = functools.lru_cache(maxsize=maxsize)(function)
        CACHES.append(cached)
        return cached  # type: ignore[return-value]

    return wrap


def clear_all() -> None:
    """Forget every process-wide cache (an engine's GPU memory is freed when nothing else holds
    it)."""
    for cached in CACHES:
        cached.cache_clear()
