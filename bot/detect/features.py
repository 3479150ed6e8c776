"""Hashed character and word n-grams of folded text, computed for a whole batch of posts at once.

The learned scorer sees a post as the folded line that matching uses (bot.detect.normalize.fold_line:
case, accents and styled letters folded, punctuation gone, " word word word "). Its features are:

- character n-grams of that line, n = 2..5, spaces included, so " cage" and "age " tell word edges;
- words and pairs of adjacent words.

Each n-gram is hashed (a fixed 64-bit polynomial hash, the same in every process and on every machine) into
one of `DIMENSIONS` columns; a post's vector holds the count of each column divided by the square root of its
number of n-grams, so long posts do not outweigh short ones. Training (bot.detect.train) and scoring use this
one function, so a model can never see features shaped differently from those it learned.

Hashing is done with numpy over the whole batch: one array of code points for every post's line, rolling
products for each n, no Python loop per n-gram.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.detect.normalize import fold_line

DIMENSIONS = 1 << 18
# Bump whenever the features change (folding, n-grams, hashing): a model saved with another version is refused
# rather than scored with columns it never learned. 2: word hashes computed in numpy (was crc32 in Python).
# 3: folding reads look-alike letters of other scripts as Latin and joins spaced letters ("c a g e").
FEATURES_VERSION = 3
CHAR_NGRAMS = (2, 3, 4, 5)
_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime, as a polynomial base
_MIX = np.uint64(0x9E3779B97F4A7C15)
_INVERSE = np.uint64(pow(int(_MULTIPLIER), -1, 1 << 64))  # M * M^-1 = 1 modulo 2^64
_SEPARATOR = 0  # code point between two posts' lines; no n-gram crosses it
_SPACE = 32
_WORD_SEED = np.uint64(1 << 40)
_PAIR_SEED = np.uint64(0xB16A)


@dataclass(frozen=True)
class Batch:
    """The hashed n-grams of a batch of posts, as parallel arrays with one entry per n-gram occurrence.

    `post` is the post's index in the batch, `column` its hashed column, `start`/`end` its [start, end) in the
    post's folded line (for explanations). `norm` is each post's divisor (square root of its n-gram count).
    """

    post: np.ndarray
    column: np.ndarray
    start: np.ndarray
    end: np.ndarray
    norm: np.ndarray
    lines: list[str]

    @property
    def size(self) -> int:
        return len(self.lines)


def featurize(texts: Sequence[str]) -> Batch:
    """The n-grams of each text, folded as matching folds it."""
    return featurize_lines([fold_line(text) for text in texts])


def featurize_lines(lines: Sequence[str]) -> Batch:
    """The n-grams of already folded lines (" word word ")."""
    lines = list(lines)
    joined = "\x00".join(lines)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    offsets = np.zeros(len(lines) + 1, dtype=np.int64)
    np.cumsum([len(line) + 1 for line in lines], out=offsets[1:])
    char = _char_ngrams(codes, offsets)
    word = _word_ngrams(codes, offsets)
    post, column, start, end = (np.concatenate([c, w]) for c, w in zip(char, word, strict=True))
    counts = np.bincount(post, minlength=len(lines)).astype(np.float32)
    norm = np.sqrt(np.maximum(counts, 1.0))
    return Batch(post, column, start, end, norm, lines)


def _mix(values: np.ndarray) -> np.ndarray:
    """Spread a polynomial hash over all 64 bits (splitmix64's finaliser), so low bits pick columns well."""
    values = values ^ (values >> np.uint64(30))
    values = values * _MIX
    values = values ^ (values >> np.uint64(27))
    return values


def _char_ngrams(codes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    is_separator = np.concatenate([[0], np.cumsum(codes == _SEPARATOR)])
    parts: list[tuple[np.ndarray, ...]] = []
    rolling = np.zeros(len(codes), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for n in range(1, max(CHAR_NGRAMS) + 1):
            # rolling[i] is the hash of codes[i:i+n]; n-grams that run past the end are dropped below.
            shifted = np.zeros(len(codes), dtype=np.uint64)
            if len(codes) >= n:
                shifted[: len(codes) - n + 1] = codes[n - 1 :]
            rolling = rolling * _MULTIPLIER + shifted
            if n not in CHAR_NGRAMS or len(codes) < n:
                continue
            starts = np.arange(len(codes) - n + 1)
            valid = is_separator[starts + n] - is_separator[starts] == 0
            starts = starts[valid]
            hashed = _mix(rolling[starts] + np.uint64(n))
            post = np.searchsorted(offsets, starts, side="right") - 1
            local = starts - offsets[post]
            parts.append((post, hashed % np.uint64(DIMENSIONS), local, local + n))
    return _stack(parts)


def _word_ngrams(codes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Words (runs of code points other than space and the separator) and pairs of neighbours in a line.

    A word's hash is the polynomial hash of its code points, sum of c[j] * M^(end-1-j), computed for every
    word at once from prefix sums: M is odd, so it has an inverse modulo 2^64, and
    hash(start, end) = M^(end-1) * (G[end] - G[start]) with G[i] = sum of c[j] * M^-j for j < i."""
    is_word = (codes != _SPACE) & (codes != _SEPARATOR)
    edges = np.diff(np.concatenate([[0], is_word.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if not len(starts):
        return _stack([])
    with np.errstate(over="ignore"):
        powers = np.concatenate(
            [[np.uint64(1)], np.cumprod(np.full(len(codes), _MULTIPLIER, dtype=np.uint64))]
        )
        inverse = np.concatenate([[np.uint64(1)], np.cumprod(np.full(len(codes), _INVERSE, dtype=np.uint64))])
        prefix = np.concatenate([[np.uint64(0)], np.cumsum(codes * inverse[: len(codes)], dtype=np.uint64)])
        word_hash = powers[ends - 1] * (prefix[ends] - prefix[starts])
        post = np.searchsorted(offsets, starts, side="right") - 1
        start, end = starts - offsets[post], ends - offsets[post]
        unigrams = _mix(word_hash + _WORD_SEED)
        same_post = post[1:] == post[:-1]
        pairs = _mix((word_hash[:-1] * _MULTIPLIER + word_hash[1:]) ^ _PAIR_SEED)[same_post]
    parts = [
        (post, unigrams % np.uint64(DIMENSIONS), start, end),
        (post[:-1][same_post], pairs % np.uint64(DIMENSIONS), start[:-1][same_post], end[1:][same_post]),
    ]
    return _stack(parts)


def _stack(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    post, column, start, end = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    return post.astype(np.int64), column.astype(np.int64), start.astype(np.int64), end.astype(np.int64)


def sparse_matrix(batch: Batch):  # type: ignore[no-untyped-def]
    """The batch as a scipy CSR matrix (posts x DIMENSIONS), for training. Needs scipy (the train extra)."""
    from scipy.sparse import csr_matrix

    values = (1.0 / batch.norm)[batch.post]
    return csr_matrix((values, (batch.post, batch.column)), shape=(batch.size, DIMENSIONS), dtype=np.float64)
