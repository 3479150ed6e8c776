"""Text folding for matching, with a map back to the original text so spans can be highlighted.

Folding: Unicode compatibility forms (full-width and styled letters such as "𝐜𝐚𝐠𝐞" become "cage"), case, and
accents ("prêt" becomes "pret"). Anything that is not a letter or digit becomes a space, so "cage-match" and
"cage, match" both read as words. The folded text keeps one entry per character in `origin`, the index of the
original character it came from, plus one past the end.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Same-length translation for the common ASCII case: lower case, non-alphanumerics to spaces.
_ASCII_FOLD = {c: (chr(c).lower() if chr(c).isalnum() else " ") for c in range(128)}


@dataclass(frozen=True)
class Folded:
    text: str
    origin: tuple[int, ...] | None  # None: same length as the original, index i came from index i

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original [start, end) of folded [start, end)."""
        if self.origin is None:
            return start, end
        return self.origin[start], self.origin[end - 1] + 1


def fold(text: str) -> Folded:
    """Fold `text` for matching; see the module docstring."""
    if text.isascii():
        return Folded(text.translate(_ASCII_FOLD), None)
    pieces: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = _fold_char(char)
        pieces.append(folded)
        origin.extend([index] * len(folded))
    return Folded("".join(pieces), tuple(origin))


@lru_cache(maxsize=65536)
def _fold_char(char: str) -> str:
    """One character folded: possibly several characters ("ﬁ" -> "fi"), possibly none (a combining mark)."""
    if unicodedata.category(char).startswith("M"):
        return ""
    out = []
    for part in unicodedata.normalize("NFKD", char).casefold():
        if unicodedata.category(part).startswith("M"):
            continue
        out.append(part if part.isalnum() else " ")
    return "".join(out)


def fold_phrase(phrase: str) -> str:
    """A rule phrase folded like post text, with runs of spaces made one."""
    return " ".join(fold(phrase).text.split())
