"""Text folding for matching, with a map back to the original text so spans can be highlighted.

Folding: Unicode compatibility forms (full-width and styled letters such as "𝐜𝐚𝐠𝐞" become "cage"), case
("CAGE", "Straße" -> "strasse"), accents ("prêt" -> "pret"). A letter or digit stays; an emoji or other symbol
becomes a word of its own; everything else (punctuation, "#", "@", "-", "_", "'") becomes a space, so
"cage-match", "#cage_match" and "cage, match" all read as the words "cage match".

`fold` is the fast path (one str.translate through a table filled on demand); `fold_with_origin` also says,
for each folded character, which original character it came from. Matching calls the second only for the
rare post that has a candidate match.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


def _fold_char(char: str) -> str:
    category = unicodedata.category(char)
    if category[0] == "M" or category == "Cf":  # combining marks, zero-width joiners and the like vanish
        return ""
    if category == "So":  # emoji and other symbols are words of their own
        return f" {char} "
    out = []
    for part in unicodedata.normalize("NFKD", char).casefold():
        if unicodedata.category(part)[0] == "M":
            continue
        out.append(part if part.isalnum() else " ")
    return "".join(out)


class _FoldTable(dict[int, str]):
    """A translate table that computes and keeps each character's fold the first time it is seen."""

    def __missing__(self, codepoint: int) -> str:
        folded = _fold_char(chr(codepoint))
        self[codepoint] = folded
        return folded


FOLD_TABLE = _FoldTable()
_WORD = re.compile(r"\S+")


def fold(text: str) -> str:
    """`text` folded for matching (see the module docstring). Runs of spaces are left as they are."""
    return text.translate(FOLD_TABLE)


def words(text: str) -> list[str]:
    """The folded words of `text`."""
    return fold(text).split()


@dataclass(frozen=True)
class Folded:
    """Folded text and, for each folded word, its [start, end) in the original text."""

    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]


def fold_with_origin(text: str) -> Folded:
    """Folded words of `text` with their original spans."""
    pieces: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = FOLD_TABLE[ord(char)]
        pieces.append(folded)
        origin.extend([index] * len(folded))
    folded_text = "".join(pieces)
    found = [(m.group(), origin[m.start()], origin[m.end() - 1] + 1) for m in _WORD.finditer(folded_text)]
    return Folded(tuple(w for w, _, _ in found), tuple((s, e) for _, s, e in found))


def fold_phrase(phrase: str) -> str:
    """A phrase folded like post text, its words separated by single spaces."""
    return " ".join(words(phrase))
