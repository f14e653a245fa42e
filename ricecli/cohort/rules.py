"""Series-typing rules: the shipped defaults (ricecli/data/cohort_rules.toml) and a user's TOML.

A rule is an AND of tag conditions (`when`), minus an OR of exceptions (`unless`); a condition is
an OR of patterns, each a case-insensitive regular expression or a number comparison ("<800").
"""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ricecli.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_RULES = Path(__file__).resolve().parents[1] / "data" / "cohort_rules.toml"
KINDS = ("T1C", "T1", "T2", "FLAIR")
_COMPARE = re.compile(r"^\s*(<=|>=|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Pattern:
    """One pattern of a condition: a regular expression or a number comparison."""

    text: str
    regex: re.Pattern[str] | None
    op: str = ""
    number: float = 0.0

    def matches(self, value: str) -> bool:
        if self.regex is not None:  # also with underscores as spaces: \b works in "t1_post"
            return self.regex.search(value) is not None or \
                self.regex.search(value.replace("_", " ")) is not None
        try:
            return _OPS[self.op](float(value.split("\\")[0]), self.number)
        except ValueError:
            return False


@dataclass(frozen=True)
class Rule:
    """A typing rule: an exclusion `code` or a kind `name`, with its conditions."""

    label: str  # the exclusion code or the kind name
    when: tuple[tuple[str, tuple[Pattern, ...]], ...]
    unless: tuple[tuple[str, tuple[Pattern, ...]], ...] = ()
    source: str = "default"

    def explain(self, facts: Mapping[str, Any]) -> str | None:
        """Why the rule matches these header facts (tag=value ~ pattern, ...), or None."""
        found = []
        for tag, patterns in self.when:
            value = _value(facts, tag)
            hit = next((p for p in patterns if value and p.matches(value)), None)
            if hit is None:
                return None
            found.append(f"{tag} {value!r} ~ {hit.text!r}")
        for tag, patterns in self.unless:
            value = _value(facts, tag)
            if value and any(p.matches(value) for p in patterns):
                return None
        return ", ".join(found) + ("" if self.source == "default" else f" ({self.source})")


@dataclass(frozen=True)
class Rules:
    """The exclusion rules (tried first) and the kind rules, in order."""

    exclude: tuple[Rule, ...]
    kinds: tuple[Rule, ...]


def _value(facts: Mapping[str, Any], tag: str) -> str:
    value = facts.get(tag, "")
    return "\\".join(value) if isinstance(value, list) else str(value)


def _pattern(text: object, where: Path) -> Pattern:
    if not isinstance(text, str):
        raise InputError(f"rule pattern {text!r} is not text", where,
                         fix="write each pattern as a quoted string")
    m = _COMPARE.match(text)
    if m:
        return Pattern(text, None, m.group(1), float(m.group(2)))
    try:
        return Pattern(text, re.compile(text, re.IGNORECASE))
    except re.error as err:
        raise InputError(f"rule pattern {text!r} is not a regular expression ({err})", where,
                         fix="fix the pattern (single quotes keep backslashes as written)") \
            from None


def _conditions(table: object, where: Path) -> tuple[tuple[str, tuple[Pattern, ...]], ...]:
    if table is None:
        return ()
    if not isinstance(table, dict):
        raise InputError("a rule's when/unless must be a table of tag = [patterns]", where,
                         fix="write e.g. when = { SeriesDescription = ['t1c'] }")
    out = []
    for tag, patterns in table.items():
        items = patterns if isinstance(patterns, list) else [patterns]
        out.append((str(tag), tuple(_pattern(p, where) for p in items)))
    return tuple(out)


def _rules(items: object, key: str, where: Path, source: str) -> tuple[Rule, ...]:
    if not isinstance(items, list):
        raise InputError(f"{key} must be a list of tables ([[{key}]])", where,
                         fix="see ricecli/data/cohort_rules.toml for the form")
    out = []
    for item in items:
        label = item.get("code" if key == "exclude" else "name") if isinstance(item, dict) \
            else None
        if not isinstance(label, str) or not item.get("when"):
            raise InputError(f"a [[{key}]] rule lacks its {'code' if key == 'exclude' else 'name'}"
                             " or its when table", where, fix="give both (see docs/cohort.md)")
        if key == "kind" and label.upper() not in (*KINDS, "OTHER"):
            raise InputError(f"kind {label!r} is not one of {', '.join(KINDS)}, other", where,
                             fix="name the kind T1C, T1, T2, FLAIR or other")
        out.append(Rule(label.upper() if key == "kind" else label,
                        _conditions(item["when"], where),
                        _conditions(item.get("unless"), where), source))
    return tuple(out)


def _load(path: Path, source: str) -> tuple[dict[str, Any], tuple[Rule, ...], tuple[Rule, ...]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("rules file not found", path, fix="check the --rules path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as err:
        raise InputError(f"rules file is not readable TOML ({err})", path,
                         fix="fix the TOML (see ricecli/data/cohort_rules.toml)") from None
    return (data, _rules(data.get("exclude", []), "exclude", path, source),
            _rules(data.get("kind", []), "kind", path, source))


def load_rules(user: Path | None = None) -> Rules:
    """The shipped rules, with a user's rules tried first (or instead, with replace = true)."""
    _, exclude, kinds = _load(DEFAULT_RULES, "default")
    if user is None:
        return Rules(exclude, kinds)
    data, user_exclude, user_kinds = _load(user, f"rule from {user.name}")
    if data.get("replace") is True:
        return Rules(user_exclude, user_kinds)
    return Rules(user_exclude + exclude, user_kinds + kinds)
