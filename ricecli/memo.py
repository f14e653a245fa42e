"""Process-wide memos: what is costly to make again inside one process, each one named.

The memos themselves are declared beside their users (`inference.model.MODELS`,
`inference.engine.ENGINES`, `inference.gpu.GPU_LIBRARIES`, the incremental-occlusion runners);
every `Memo` registers itself here, so `clear_all` forgets them all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    """A named map from key to a value made once per process (oldest dropped past `limit`)."""

    def __init__(self, name: str, why: str, limit: int | None = None) -> None:
        self.name, self.why, self.limit = name, why, limit
        self._values: OrderedDict[K, V] = OrderedDict()
        REGISTRY.append(self)

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The value for `key`, made by `make()` the first time."""
        if key in self._values:
            self._values.move_to_end(key)
            return self._values[key]
        value = make()
        self._values[key] = value
        if self.limit is not None and len(self._values) > self.limit:
            self._values.popitem(last=False)
        return value

    def peek(self, key: K) -> V | None:
        """The value for `key` if it was made, else None (nothing is made)."""
        return self._values.get(key)

    def clear(self) -> None:
        """Forget every value (an engine's GPU memory is freed when nothing else holds it)."""
        self._values.clear()

    def __len__(self) -> int:
        return len(self._values)


REGISTRY: list[Memo[Any, Any]] = []


def clear_all() -> None:
    """Drop every process-wide inference cache."""
    for memo in REGISTRY:
        memo.clear()
