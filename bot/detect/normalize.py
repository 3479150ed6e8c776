"""Text folding for matching, with a map back to the original text so spans can be highlighted.

Folding: Unicode compatibility forms (full-width and styled letters such as "𝐜𝐚𝐠𝐞" become "cage"), case
("CAGE", "Straße" -> "strasse"), accents ("prêt" -> "pret"). A letter or digit stays; an emoji or other symbol
becomes a word of its own; everything else (punctuation, "#", "@", "-", "_", "'") becomes a space, so
"cage-match", "#cage_match" and "cage, match" all read as the words "cage match".

Two disguises are undone as well. Look-alike letters of other scripts (Unicode's TR39 confusables, restricted
to look-alikes of Latin letters: bot/detect/confusables.tsv) become the Latin letter, but only in a word that
also holds a Latin letter a-z, so "саge" with a Cyrillic "с" and "а" reads "cage" while a Russian or Greek
word is left as it is. A run of at least MIN_SPACED_LETTERS single letters separated by single spaces is one
word: "c a g e" reads "cage" (shorter runs are ordinary: "il y a à").

`fold_line` is the fast path (one bytes.translate for text within Latin-1, word by word through a cache for
other text); `fold_with_origin` also says, for each folded word, which original characters it came from.
Matching calls the second only for the rare post that has a match, to mark its spans.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path


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


def _latin_lookalikes(file: Path) -> dict[int, str]:
    """Folded letter of another script -> the Latin letter it looks like, for str.translate."""
    table: dict[str, str] = {}
    for line in file.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        code, latin, _names = line.split("\t", 2)
        source = chr(int(code, 16))
        folded = _fold_char(source)
        # A capital folds to its small letter, whose own line wins ("Ɩ" looks like l, its small "ɩ" like i).
        if folded == source or folded not in table:
            table[folded] = latin
    return {ord(folded): latin for folded, latin in table.items()}


LOOKALIKES = _latin_lookalikes(Path(__file__).with_name("confusables.tsv"))
_LOOKALIKE_CHARS = frozenset(map(chr, LOOKALIKES))
_LATIN_LETTER = re.compile("[a-z]")
MIN_SPACED_LETTERS = 4
# A letter after a space (or the start), then at least three more, each after exactly one space: "c a g e".
# Not after an apostrophe: "let's a b c" is no run.
_SPACED = re.compile(rf"(?<!\S)[^\W\d_](?: [^\W\d_]){{{MIN_SPACED_LETTERS - 1},}}(?!\w)")
# Inside any such run: two single letters, each after a space (\w: letters and more, a looser test). Starting
# with a literal, it is found several times faster than a run, so the common post without one costs little.
_SPACED_HINT = re.compile(r" \w \w ")


def unconfuse(folded: str) -> str:
    """Folded words (one space apart) with look-alike letters made Latin in each word that also holds a Latin
    letter. One character for one, so offsets into `folded` stay valid."""
    if _LOOKALIKE_CHARS.isdisjoint(folded):
        return folded
    return " ".join(_unconfuse_word(word) for word in folded.split(" "))


def _unconfuse_word(word: str) -> str:
    if _LATIN_LETTER.search(word) and not _LOOKALIKE_CHARS.isdisjoint(word):
        return word.translate(LOOKALIKES)
    return word


def has_spaced_letters(text: str) -> bool:
    """Whether `text` holds a run of spaced single letters that folding joins into one word."""
    return _SPACED_HINT.search(text) is not None and _SPACED.search(text) is not None


def join_spaced_letters(text: str) -> str:
    """`text` with each run of spaced single letters joined: "the c a g e match" -> "the cage match"."""
    if _SPACED_HINT.search(text) is None:
        return text
    return _SPACED.sub(lambda run: run.group().replace(" ", ""), text)


def _joined_with_origin(text: str) -> tuple[str, list[int] | None]:
    """join_spaced_letters(text), and for each of its characters (and its end) the offset in `text`;
    None when nothing was joined."""
    runs = list(_SPACED.finditer(text)) if _SPACED_HINT.search(text) else []
    if not runs:
        return text, None
    pieces: list[str] = []
    origin: list[int] = []
    position = 0
    for run in runs:
        pieces.append(text[position : run.start()])
        origin.extend(range(position, run.start()))
        pieces.append(run.group().replace(" ", ""))
        origin.extend(range(run.start(), run.end(), 2))  # the letters, every other character
        position = run.end()
    pieces.append(text[position:])
    origin.extend(range(position, len(text) + 1))
    return "".join(pieces), origin


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


def _latin1_bytes() -> bytes:
    """A bytes.translate table for text encoded as Latin-1: each character whose fold is one ASCII character
    becomes it; the few others (ß, æ, ø, ½, ©, the soft hyphen...) stay as they are, a byte over 127 that
    sends the text to the word path."""
    table = bytearray(range(256))
    for code in range(256):
        folded = FOLD_TABLE[code]
        if len(folded) == 1 and folded.isascii():
            table[code] = ord(folded)
    return bytes(table)


_LATIN1_BYTES = _latin1_bytes()


# In a folded line, MIN_SPACED_LETTERS words of one character in a row. A run of spaced letters in Latin-1
# text whose characters each fold to one ASCII character always leaves one: each letter folds to a letter or
# digit, the single spaces between them stay, and what comes before (a space, or the start) and after (no
# letter or digit, or the end) becomes a space. So a line without one needs no joining; one with it (also "1 2
# 3 4" or "a.b.c.d") is folded again the careful way. Searched in the line, not in a translated copy of the
# text: a copy costs a pass, and a search for "a a a a" in a text of letters keeps stopping on near misses.
_ONE_LETTER_WORDS = re.compile(" " + r"\S " * MIN_SPACED_LETTERS)


def fold_line(text: str) -> str:
    """The folded words of `text` as one line, " word word word ", for whole-word literal search.

    This is the hot path of matching. Text within Latin-1 (ASCII, and the accents of Western European
    languages) is folded in one bytes.translate, a C loop: str.translate looks each non-ASCII character
    up in a dict, several times slower. In other text (emoji, curly quotes, other scripts, styled letters,
    look-alikes), only the words that hold non-ASCII characters go through the slower table, and through a
    cache, since posts repeat words.
    """
    encoded = text.encode("latin-1", "ignore")  # a copy of a Latin-1 string; shorter when it is not one
    if len(encoded) == len(text):
        line = _line_of_latin1(encoded)
        if line is not None and _ONE_LETTER_WORDS.search(line) is None:
            return line  # no spaced letters to join (see _ONE_LETTER_WORDS): the text folds as it is
    return _fold_joined_line(join_spaced_letters(text))


def _line_of_latin1(encoded: bytes) -> str | None:
    """The folded line of Latin-1 text (`encoded`), or None when a character of it does not fold to one
    ASCII character (ß, æ, ø, ½, ©, the soft hyphen...)."""
    folded = encoded.translate(_LATIN1_BYTES)
    if not folded.isascii():
        return None
    # Spaces are collapsed in the decoded str, not in the bytes: on CPython 3.11 `"  " in str` takes about a
    # third of the time of `b"  " in bytes` (measured), the rest no longer. Spaces are the only whitespace.
    line = folded.decode("ascii")
    if "  " in line:
        line = " ".join(line.split())
    return f" {line.strip(' ')} "


def _fold_joined_line(text: str) -> str:
    """fold_line of text whose spaced letters are joined already."""
    encoded = text.encode("latin-1", "ignore")
    line = _line_of_latin1(encoded) if len(encoded) == len(text) else None
    return line if line is not None else _fold_line_by_words(text)


def _fold_line_by_words(text: str) -> str:
    """fold_line for text with characters beyond Latin-1, or whose fold is not one ASCII character."""
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
    folded = unconfuse(" ".join(word.translate(FOLD_TABLE).split()))
    if len(word) <= WORD_CACHE_LONGEST:
        size = sys.getsizeof(word) + sys.getsizeof(folded)
        if _word_cache_bytes + size > WORD_CACHE_BYTES:
            _WORD_CACHE.clear()
            _word_cache_bytes = 0
        _WORD_CACHE[word] = folded
        _word_cache_bytes += size
    return folded


def fold(text: str) -> str:
    """`text` folded character by character (case, accents, compatibility forms, punctuation); runs of
    spaces are left as they are. Look-alikes and spaced letters need whole words: see `words`."""
    return text.translate(FOLD_TABLE)


def words(text: str) -> list[str]:
    """The folded words of `text`, look-alike letters and spaced letters undone."""
    return unconfuse(" ".join(fold(join_spaced_letters(text)).split())).split()


class Folded:
    """The folded words of a text and, for each, its [start, end) in the original text."""

    __slots__ = ("spans", "words")

    def __init__(self, words: list[str], spans: list[tuple[int, int]]) -> None:
        self.words = words
        self.spans = spans


def fold_with_origin(text: str) -> Folded:
    """Folded words of `text` with their original spans; the same words as `words(text)`.

    ASCII characters fold one for one, so a word made of them keeps its offsets; only a word that holds
    other characters is folded character by character to map it back. Spaced letters are joined first and
    their offsets mapped back after.
    """
    text, origin = _joined_with_origin(text)
    folded = _fold_joined_with_origin(text)
    if origin is not None:
        folded.spans = [(origin[start], origin[end - 1] + 1) for start, end in folded.spans]
    return folded


_BYTES_WORD = re.compile(rb"\S+")


def word_spans(text: str) -> list[tuple[int, int]]:
    """The original [start, end) of each folded word of `text`: `fold_with_origin(text).spans`, found in one
    pass of C when every character of `text` folds to one ASCII character (the fold keeps each offset then)
    and no spaced letters are joined, as in most posts of Western European languages."""
    folded = _fold_keeping_offsets(text)
    return word_spans_of_folded(folded) if folded is not None else fold_with_origin(text).spans


def _fold_keeping_offsets(text: str) -> bytes | None:
    """`text` folded character for character into ASCII letters, digits and spaces (each word at the offsets
    of its original), or None when the fold moves offsets: a character that does not fold to one ASCII
    character, or spaced letters to join."""
    encoded = text.encode("latin-1", "ignore")
    if len(encoded) == len(text) and not has_spaced_letters(text):
        folded = encoded.translate(_LATIN1_BYTES)
        if folded.isascii():
            return folded
    return None


class WordSpans:
    """`word_spans(text)[index]`, for the few words a post's hits need rather than for every word.

    Where the fold keeps offsets, a word's span is read off the folded text with one split (C) up to it:
    a hit marks two or three words, and listing every word's span costs a match object for each. A text
    asked for more than LAZY_WORDS different words has every span listed once, so a hostile post of
    thousands of hits costs what listing costs, not a split per word."""

    LAZY_WORDS = 8
    __slots__ = ("_folded", "_known", "_spans", "_text")

    def __init__(self, text: str) -> None:
        """Nothing is folded until a span is asked for: a post whose candidate rules all fail needs none."""
        self._text: str | None = text
        self._folded: bytes | None = None
        self._spans: list[tuple[int, int]] | None = None
        self._known: dict[int, tuple[int, int]] = {}

    def __getitem__(self, index: int) -> tuple[int, int]:
        if self._text is not None:  # the first question
            self._folded = _fold_keeping_offsets(self._text)
            if self._folded is None:
                self._spans = fold_with_origin(self._text).spans
            self._text = None
        if self._spans is not None:
            return self._spans[index]
        span = self._known.get(index)
        if span is None:
            if len(self._known) >= self.LAZY_WORDS:
                self._spans = word_spans_of_folded(self._folded)  # type: ignore[arg-type]
                return self._spans[index]
            span = self._known[index] = _span_of_word(self._folded, index)  # type: ignore[arg-type]
        return span


def word_spans_of_folded(folded: bytes) -> list[tuple[int, int]]:
    """The [start, end) of each word of text folded by _fold_keeping_offsets."""
    return [word.span() for word in _BYTES_WORD.finditer(folded)]


def _span_of_word(folded: bytes, index: int) -> tuple[int, int]:
    """The [start, end) of word `index` (from 0; it must exist) of text folded by _fold_keeping_offsets,
    whose only whitespace is the space."""
    rest = folded.split(None, index)[-1]  # word `index` and what follows, its leading spaces stripped
    start = len(folded) - len(rest)
    length = rest.find(b" ")
    return start, start + (length if length >= 0 else len(rest))


def _fold_joined_with_origin(text: str) -> Folded:
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


# The folded words of a non-ASCII word with their [start, end) inside it, since posts repeat words. Only
# words up to WORD_CACHE_LONGEST characters, at most ORIGIN_CACHE_WORDS of them (a few MiB), emptied when
# full.
_ORIGIN_CACHE: dict[str, tuple[tuple[str, int, int], ...]] = {}
ORIGIN_CACHE_WORDS = 20_000


def _fold_word_with_origin(word: str, offset: int) -> list[tuple[str, int, int]]:
    """The folded words of `word` (which starts at `offset` in the text) with their spans in the text."""
    pieces = _ORIGIN_CACHE.get(word)
    if pieces is None:
        pieces = _fold_word_with_own_origin(word)
        if len(word) <= WORD_CACHE_LONGEST:
            if len(_ORIGIN_CACHE) >= ORIGIN_CACHE_WORDS:
                _ORIGIN_CACHE.clear()
            _ORIGIN_CACHE[word] = pieces
    return [(folded, offset + start, offset + end) for folded, start, end in pieces]


def _fold_word_with_own_origin(word: str) -> tuple[tuple[str, int, int], ...]:
    pieces: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(word):
        folded = FOLD_TABLE[ord(char)]
        pieces.append(folded)
        origin.extend([index] * len(folded))
    folded_word = "".join(pieces)
    return tuple(
        (_unconfuse_word(m.group()), origin[m.start()], origin[m.end() - 1] + 1)
        for m in _WORD.finditer(folded_word)
    )
