"""memo.py: process caches are functools.lru_cache on plain functions; clear_all forgets every
one of them (models and engines are then opened again)."""

from __future__ import annotations

from ricecli.memo import clear_all, process_cache


def test_made_once_oldest_dropped_past_the_limit():
    made: list[str] = []

    @process_cache(maxsize=2)
    def upper(key: str) -> str:
        made.append(key)
        return key.upper()

    for key in ("a", "b", "a", "c", "b"):
        upper(key)
    # a, b made; a reused (now newest); c made, b dropped (oldest); b made again
    assert made == ["a", "b", "c", "b"] and upper.cache_info().currsize == 2


def test_clear_all_forgets_models_and_engines(tiny_model):
    from ricecli.inference.engine import open_engine
    from ricecli.inference.model import load_model

    model = load_model(tiny_model)
    engine = open_engine(model, "cpu")
    assert load_model(tiny_model) is model and open_engine(model, "cpu") is engine
    clear_all()
    again = load_model(tiny_model)
    assert again is not model and again == model
    assert open_engine(again, "cpu") is not engine
