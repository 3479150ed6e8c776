"""Multi-literal scanners behind the matcher: every rule literal found in one pass over a folded line.

Both take the same keys (" cage match ", " fight" for fight*, ...) with their entries, and report each match
as (index of the line, index of the last word it covers, entry). pyahocorasick is the default and always
installed; Hyperscan (`pip install '.[hyperscan]'`, x86-64) scans in SIMD and is chosen with
`matcher.engine = "hyperscan"`.

A batch of lines is scanned in one call over the lines joined end to end: the call into C, not the scan,
is most of the cost of a short line. No key can match across two lines: each line starts and ends with a
space, so where two meet there are two spaces in a row, which no key holds (its words are never empty and
are one space apart). The lines themselves are matched as they are, so a batch finds exactly what each line
alone would.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Any, Protocol

import ahocorasick

ENGINES = ("pyahocorasick", "hyperscan")
SPACE = ord(" ")


class Scanner(Protocol):
    def scan_lines(self, lines: Sequence[str]) -> Iterator[tuple[int, int, Any]]:
        """(line index, last word index, entry) for every key found in each of `lines` (folded lines,
        " word word "), in order of line."""
        ...


def _line_ends(lines: Sequence[str]) -> list[int]:
    """The offset just past each line in the lines joined end to end."""
    return list(accumulate(map(len, lines)))


def _joined_bytes(lines: Sequence[str]) -> tuple[bytes, Sequence[str] | list[bytes]]:
    """`lines` joined and encoded as UTF-8, and the lines with the same lengths as their bytes in it: the
    lines themselves when all are ASCII (most folded lines are), so a batch is encoded in one call rather
    than line by line; else each line encoded."""
    joined = "".join(lines)
    if joined.isascii():
        return joined.encode("ascii"), lines
    encoded = [line.encode("utf-8", "surrogatepass") for line in lines]
    return b"".join(encoded), encoded


class AhoCorasickScanner:
    def __init__(self, keys: dict[str, tuple[Any, ...]]) -> None:
        self._automaton = ahocorasick.Automaton()
        for key, entries in keys.items():
            self._automaton.add_word(key, entries)
        self._empty = not keys
        if keys:
            self._automaton.make_automaton()

    def scan_lines(self, lines: Sequence[str]) -> Iterator[tuple[int, int, Any]]:
        if self._empty or not lines:
            return
        joined, ends = "".join(lines), _line_ends(lines)
        # Matches come in order of their end, so spaces are counted from the previous match on in the same
        # line, not from the line's start each time (which is quadratic in a long line of repeated matches).
        line, line_end, counted, spaces = -1, 0, 0, 0
        for end, entries in self._automaton.iter(joined):
            if end >= line_end:  # the first match in a later line
                line = bisect_right(ends, end)
                line_end, counted, spaces = ends[line], ends[line] - len(lines[line]), 0
            # `end` is the key's last character: a closing space, or the end of a prefix (fight*).
            stop = end + (0 if joined[end] == " " else 1)
            spaces += joined.count(" ", counted, stop)
            counted = stop
            for entry in entries:
                yield line, spaces - 1, entry


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

    def scan_lines(self, lines: Sequence[str]) -> Iterator[tuple[int, int, Any]]:
        if self._database is None or not lines:
            return
        data, encoded = _joined_bytes(lines)
        ends = _line_ends(encoded)
        found: list[tuple[int, int]] = []
        self._database.scan(
            data, match_event_handler=lambda key, _start, end, _flags, _ctx: found.append((key, end))
        )
        line, line_end, counted, spaces = -1, 0, 0, 0
        for key, end in sorted(found, key=lambda match: match[1]):
            if end > line_end:  # the first match in a later line
                line = bisect_right(ends, end - 1)
                line_end, counted, spaces = ends[line], ends[line] - len(encoded[line]), 0
            # `end` is one past the key's last byte: a closing space, or the end of a prefix (fight*). Spaces
            # are one byte in UTF-8, so counting them before it gives the word, as with pyahocorasick; in
            # order of `end`, from the previous match on, so a long line is not counted again for each match.
            stop = end - 1 if data[end - 1] == SPACE else end
            spaces += data.count(b" ", counted, stop)
            counted = stop
            for entry in self._entries[key]:
                yield line, spaces - 1, entry


def make_scanner(engine: str, keys: dict[str, tuple[Any, ...]]) -> Scanner:
    if engine == "hyperscan":
        return HyperscanScanner(keys)
    return AhoCorasickScanner(keys)
