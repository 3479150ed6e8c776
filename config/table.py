"""Reading one TOML table with types: each look-up names the file and the key when the value is wrong, and
`finish` refuses keys nobody asked for, so a typo never silently does nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.timeutil import parse_duration

_REQUIRED = object()
# A request unanswered in five minutes will not be answered: a longer timeout only stalls the channel's job.
MAX_TIMEOUT = 300.0


class ConfigError(Exception):
    """The settings are wrong; the message is one line that names the file and the key."""


class Table:
    """A TOML table being read: typed look-ups that name the key on error, then a check for unknown keys."""

    def __init__(self, data: Any, where: str, file: Path) -> None:
        self.file = file
        self.where = where
        if not isinstance(data, dict):
            self.fail("", f"expected a table, got {_type_name(data)}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def fail(self, key: str, message: str) -> None:
        place = ".".join(p for p in (self.where, key) if p) or "top level"
        raise ConfigError(f"{self.file}: {place}: {message}")

    def get(self, key: str, kind: str, default: Any = _REQUIRED) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                self.fail(key, f"missing; expected {_KIND_TEXT[kind]}")
            return default
        value = self.data[key]
        try:
            return _convert(value, kind)
        except ValueError as error:
            self.fail(key, str(error))

    def table(self, key: str) -> Table:
        self.used.add(key)
        return Table(self.data.get(key, {}), ".".join(p for p in (self.where, key) if p), self.file)

    def tables(self, key: str) -> list[Table]:
        self.used.add(key)
        items = self.data.get(key, [])
        if not isinstance(items, list):
            self.fail(key, f"expected an array of tables ([[{key}]]), got {_type_name(items)}")
        return [Table(item, f"{key}[{i}]", self.file) for i, item in enumerate(items)]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            expected = ", ".join(sorted(self.used)) or "no keys"
            self.fail(unknown[0], f"unknown key; expected one of: {expected}")


_KIND_TEXT = {
    "str": "a string",
    "int": "a whole number",
    "bool": "true or false",
    "duration": "a duration such as 30s, 5m or 2h",
    "interval": "a duration above zero such as 30s, 5m or 2h",
    "timeout": f"a duration above zero and at most {MAX_TIMEOUT:.0f}s, such as 10s",
    "path": "a file path",
    "names": "a list of names",
}


def _type_name(value: Any) -> str:
    return {
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _duration(value: Any, kind: str) -> float:
    """A duration; an interval or a timeout must also be above zero (zero would spin), a timeout bounded."""
    seconds = parse_duration(value)
    if kind != "duration" and seconds <= 0:
        raise ValueError(f"expected {_KIND_TEXT[kind]}, got {value!r}")
    if kind == "timeout" and seconds > MAX_TIMEOUT:
        raise ValueError(f"expected {_KIND_TEXT[kind]}, got {value!r}")
    return seconds


def _convert(value: Any, kind: str) -> Any:
    if kind in ("duration", "interval", "timeout"):
        return _duration(value, kind)
    expected = _KIND_TEXT[kind]
    if kind in ("str", "path"):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected {expected}, got {_type_name(value)} {value!r}")
        return Path(value) if kind == "path" else value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected {expected}, got {_type_name(value)} {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected {expected}, got {_type_name(value)} {value!r}")
        return value
    if kind == "names":
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError(f'expected {expected} such as ["elonmusk", "finkd"], got {value!r}')
        return tuple(v.strip().lstrip("@") for v in value)
    raise AssertionError(f"unknown kind {kind}")
