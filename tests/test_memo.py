"""memo.py: the process-wide memos make each value once, drop the oldest past a limit, and
clear_all forgets every one of them."""

from __future__ import annotations

from ricecli.memo import REGISTRY, Memo, clear_all


def test_made_once_oldest_dropped_past_the_limit():
    made: list[str] = []
    memo: Memo[str, str] = Memo("test", "a test memo", limit=2)
    for key in ("a", "b", "a", "c", "b"):
        memo.get(key, lambda key=key: made.append(key) or key.upper())
    # a, b made; a reused (now newest); c made, b dropped (oldest); b made again
    assert made == ["a", "b", "c", "b"] and len(memo) == 2
    assert memo.peek("a") is None and memo.peek("b") == "B" and memo.peek("c") == "C"


def test_clear_all_forgets_every_registered_memo():
    from ricecli.inference.engine import ENGINES
    from ricecli.inference.model import MODELS

    assert MODELS in REGISTRY and ENGINES in REGISTRY
    memo: Memo[int, int] = Memo("test-2", "another test memo")
    memo.get(1, lambda: 1)
    clear_all()
    assert len(memo) == 0 and len(MODELS) == 0 and len(ENGINES) == 0
