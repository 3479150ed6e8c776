"""Multi-literal scanners behind the matcher: every rule literal found in one pass over a folded line.

Both take the same keys (" cage match ", " fight" for fight*, ...) with their entries, and report each match
as (index of the last word it covers, entry). pyahocorasick is the default and always installed; Hyperscan
(`pip install '.[hyperscan]'`, x86-64) scans in SIMD and is chosen with `matcher.engine = "hyperscan"`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import ahocorasick

ENGINES = ("pyahocorasick", "hyperscan")
SPACE = ord(" ")


class Scanner(Protocol):
    def scan(self, line: str) -> Iterator[tuple[int, Any]]:
        """(last word index, entry) for every key found in `line`."""
        ...


class AhoCorasickScanner:
    def __init__(self, keys: dict[str, tuple[Any, ...]]) -> None:
        self._automaton = ahocorasick.Automaton()
        for key, entries in keys.items():
            self._automaton.add_word(key, entries)
        self._empty = not keys
        if keys:
            self._automaton.make_automaton()

    def scan(self, line: str) -> Iterator[tuple[int, Any]]:
        if self._empty:
            return
        # Matches come in order of their end, so spaces are counted from the previous match on, not from the
        # start of the line each time (which is quadratic in a long line of repeated matches).
        counted, spaces = 0, 0
        for end, entries in self._automaton.iter(line):
            # `end` is the key's last character: a closing space, or the end of a prefix (fight*).
            stop = end + (0 if line[end] == " " else 1)
            spaces += line.count(" ", counted, stop)
            counted = stop
            for entry in entries:
                yield spaces - 1, entry


class HyperscanScanner:
    def __init__(self, keys: dict[str, tuple[Any, ...]]) -> None:
        try:
            import hyperscan
        except ImportError:
            raise ImportError("matcher.engine hyperscan needs: pip install 'ringside[hyperscan]'") from None
        self._entries = list(keys.values())
        self._database = None
        if keys:
            self._database = hyperscan.Database()
            self._database.compile(
                expressions=[key.encode("utf-8") for key in keys],
                ids=list(range(len(keys))),
                elements=len(keys),
                flags=[0] * len(keys),
                literal=True,
            )

    def scan(self, line: str) -> Iterator[tuple[int, Any]]:
        if self._database is None:
            return
        data = line.encode("utf-8", "surrogatepass")
        found: list[tuple[int, int]] = []
        self._database.scan(
            data, match_event_handler=lambda key, _start, end, _flags, _ctx: found.append((key, end))
        )
        counted, spaces = 0, 0
        for key, end in sorted(found, key=lambda match: match[1]):
            # `end` is one past the key's last byte: a closing space, or the end of a prefix (fight*). Spaces
            # are one byte in UTF-8, so counting them before it gives the word, as with pyahocorasick; in
            # order of `end`, from the previous match on, so a long line is not counted again for each match.
            stop = end - 1 if data[end - 1] == SPACE else end
            spaces += data.count(b" ", counted, stop)
            counted = stop
            for entry in self._entries[key]:
                yield spaces - 1, entry


def make_scanner(engine: str, keys: dict[str, tuple[Any, ...]]) -> Scanner:
    if engine == "hyperscan":
        return HyperscanScanner(keys)
    return AhoCorasickScanner(keys)
