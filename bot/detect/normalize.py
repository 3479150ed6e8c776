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
import sys
import unicodedata


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
# The ASCII part of FOLD_TABLE as a bytes table (every ASCII character folds to one ASCII character).
_ASCII_BYTES = bytes(ord(FOLD_TABLE[c]) if c < 128 else c for c in range(256))
_WORD = re.compile(r"\S+")


# Folded forms of non-ASCII words, since posts repeat words. Bounded by the bytes its strings hold, not by
# entries: a stream of long distinct words would otherwise fill memory. A word longer than WORD_CACHE_LONGEST
# is folded each time, never kept: it seldom comes back, and would take the room of hundreds of short ones.
_WORD_CACHE: dict[str, str] = {}
WORD_CACHE_BYTES = 16 * 1024 * 1024
WORD_CACHE_LONGEST = 64
_word_cache_bytes = 0


def fold_line(text: str) -> str:
    """The folded words of `text` as one line, " word word word ", for whole-word literal search.

    This is the hot path of matching. ASCII is folded as bytes; in other text, only the words that hold
    non-ASCII characters go through the slower table, and through a cache, since posts repeat words.
    """
    if text.isascii():  # bytes.translate and bytes.replace are several times faster than str.split/join
        folded = text.encode("ascii").translate(_ASCII_BYTES)
        while b"  " in folded:
            folded = folded.replace(b"  ", b" ")
        return (b" " + folded.strip(b" ") + b" ").decode("ascii")
    cache = _WORD_CACHE
    parts = []
    # Fold the ASCII characters in one bytes pass, then only words that still hold non-ASCII ones.
    ascii_folded = (
        text.encode("utf-8", "surrogatepass").translate(_ASCII_BYTES).decode("utf-8", "surrogatepass")
    )
    for word in ascii_folded.split():
        if word.isascii():
            parts.append(word)
            continue
        folded = cache.get(word)
        if folded is None:
            folded = _fold_and_keep(word)
        if folded:
            parts.append(folded)
    return " " + " ".join(parts) + " "


def _fold_and_keep(word: str) -> str:
    """The folded form of `word`, kept in the word cache when short, within the cache's byte budget."""
    global _word_cache_bytes
    folded = " ".join(word.translate(FOLD_TABLE).split())
    if len(word) <= WORD_CACHE_LONGEST:
        size = sys.getsizeof(word) + sys.getsizeof(folded)
        if _word_cache_bytes + size > WORD_CACHE_BYTES:
            _WORD_CACHE.clear()
            _word_cache_bytes = 0
        _WORD_CACHE[word] = folded
        _word_cache_bytes += size
    return folded


def fold(text: str) -> str:
    """`text` folded for matching (see the module docstring). Runs of spaces are left as they are."""
    return text.translate(FOLD_TABLE)


def words(text: str) -> list[str]:
    """The folded words of `text`."""
    return fold(text).split()


class Folded:
    """The folded words of a text and, for each, its [start, end) in the original text."""

    __slots__ = ("spans", "words")

    def __init__(self, words: list[str], spans: list[tuple[int, int]]) -> None:
        self.words = words
        self.spans = spans


def fold_with_origin(text: str) -> Folded:
    """Folded words of `text` with their original spans; the same words as `words(text)`.

    ASCII characters fold one for one, so a word made of them keeps its offsets; only a word that holds
    other characters is folded character by character to map it back.
    """
    ascii_folded = (
        text.encode("utf-8", "surrogatepass").translate(_ASCII_BYTES).decode("utf-8", "surrogatepass")
    )
    words: list[str] = []
    spans: list[tuple[int, int]] = []
    for match in _WORD.finditer(ascii_folded):
        word = match.group()
        if word.isascii():
            words.append(word)
            spans.append(match.span())
        else:
            for folded_word, start, end in _fold_word_with_origin(word, match.start()):
                words.append(folded_word)
                spans.append((start, end))
    return Folded(words, spans)


def _fold_word_with_origin(word: str, offset: int) -> list[tuple[str, int, int]]:
    pieces: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(word):
        folded = FOLD_TABLE[ord(char)]
        pieces.append(folded)
        origin.extend([offset + index] * len(folded))
    folded_word = "".join(pieces)
    return [(m.group(), origin[m.start()], origin[m.end() - 1] + 1) for m in _WORD.finditer(folded_word)]
