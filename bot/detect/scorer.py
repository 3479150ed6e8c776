"""The learned scorer: a linear model over hashed n-grams (bot.detect.features), and why it scored a post.

A model is two files side by side: `NAME.json` (format, threshold, categories, biases, what it was trained on
and how it scored in cross-validation) and `NAME.npz` (numpy arrays: the flag weights and the category
weights). Both load without running code: JSON, and `numpy.load(allow_pickle=False)`. The JSON names the
arrays' SHA-256, so a model whose arrays do not belong to it is refused.

Scoring needs only numpy; training (bot.detect.train) needs scikit-learn.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bot.detect.errors import ModelError
from bot.detect.features import CHAR_NGRAMS, DIMENSIONS, FEATURES_VERSION, Batch, featurize, featurize_lines
from bot.detect.normalize import fold_with_origin
from bot.models import Span

FORMAT = "ringside.scorer/1"
CATEGORIES = ("challenge", "taunt", "rivalry", "response")
# Posts up to this many words and characters are explained by leaving out each word in turn; a post of W words
# costs W + 1 featurized copies of itself, so longer ones use the weights of the n-grams each word holds.
OCCLUSION_WORDS = 120
OCCLUSION_CHARS = 1_500
# Copies featurized at once: bounds the memory of explaining a poll (about 430 bytes a character).
OCCLUSION_BUDGET = 200_000
DEFAULT_MODEL = Path(__file__).resolve().parent.parent.parent / "config" / "model" / "scorer.json"


@dataclass(frozen=True)
class Scorer:
    """A trained model: P(flag) for a batch of posts, the likeliest category, and the words that drove it."""

    weights: np.ndarray  # (DIMENSIONS,) float32
    bias: float
    category_weights: np.ndarray  # (len(categories), DIMENSIONS) float32
    category_bias: np.ndarray  # (len(categories),)
    threshold: float
    categories: tuple[str, ...] = CATEGORIES
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    # -- scoring --------------------------------------------------------------------------------------

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """P(flag) for each text, computed for the whole batch at once."""
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return self.probabilities_of(featurize(texts))

    def probabilities_of_lines(self, lines: Sequence[str]) -> np.ndarray:
        """P(flag) for each post given its folded line (`fold_line` of its text): `probabilities` of the
        texts, for a caller that has folded them already."""
        if not lines:
            return np.zeros(0, dtype=np.float64)
        return self.probabilities_of(featurize_lines(lines))

    def probabilities_of(self, batch: Batch) -> np.ndarray:
        sums = np.bincount(batch.post, weights=self.weights[batch.column], minlength=batch.size)
        return _sigmoid(sums / batch.norm + self.bias)

    def category(self, text: str) -> str:
        """The likeliest alerting category for a post the model flags."""
        return self.categories_of([text])[0]

    def categories_of(self, texts: Sequence[str]) -> list[str]:
        """The likeliest alerting category of each text, for the whole batch at once."""
        if not texts:
            return []
        batch = featurize(texts)
        rows = np.stack(
            [
                np.bincount(batch.post, weights=weights[batch.column], minlength=batch.size)
                for weights in self.category_weights
            ]
        )
        rows = rows / batch.norm + self.category_bias[:, None]
        return [self.categories[int(i)] for i in np.argmax(rows, axis=0)]

    # -- explaining -----------------------------------------------------------------------------------

    def explain(self, text: str, limit: int = 3) -> tuple[Span, ...]:
        """The phrases of `text` that pushed its score up most, as spans of the original text."""
        return self.explain_all([text], limit)[0]

    def explain_all(self, texts: Sequence[str], limit: int = 3) -> list[tuple[Span, ...]]:
        """For each text, the phrases that pushed its score up most, as spans of the original text.

        A word's push is how far the post's score falls without it (for long posts, the weights of the
        n-grams it holds); the strongest words seed phrases that grow over neighbours that also pushed up.
        A span's term is the original text it covers.
        """
        if not texts:
            return []
        folded = [fold_with_origin(text) for text in texts]
        short = [
            i
            for i, f in enumerate(folded)
            if len(f.words) <= OCCLUSION_WORDS and sum(map(len, f.words)) <= OCCLUSION_CHARS
        ]
        long = sorted(set(range(len(texts))) - set(short))
        scores: list[np.ndarray] = [np.zeros(0)] * len(texts)
        for i, own in zip(short, self._occlusion_scores([folded[i].words for i in short]), strict=True):
            scores[i] = own
        for i, own in zip(long, self._word_scores([folded[i].words for i in long]), strict=True):
            scores[i] = own
        explained = []
        for text, words, own in zip(texts, folded, scores, strict=True):
            seeds = np.where([len(w) > 1 for w in words.words], own, np.minimum(own, 0.0))
            spans = [_whole_words(text, words.spans, a, b) for a, b in _phrases(seeds, limit)]
            explained.append(tuple(Span(start, end, text[start:end]) for start, end in _merged(spans)))
        return explained

    def _occlusion_scores(self, posts: list[list[str]]) -> list[np.ndarray]:
        """Each post's push per folded word: how far its score (log-odds) falls when that word is left out.

        Every post and every one-word-shorter variant is featurized in one batch."""
        scores: list[np.ndarray] = []
        chunk: list[list[str]] = []
        size = 0
        for words in posts:
            cost = (len(words) + 1) * (sum(map(len, words)) + len(words) + 1)
            if chunk and size + cost > OCCLUSION_BUDGET:
                scores += self._occlusion_chunk(chunk)
                chunk, size = [], 0
            chunk.append(words)
            size += cost
        if chunk:
            scores += self._occlusion_chunk(chunk)
        return scores

    def _occlusion_chunk(self, posts: list[list[str]]) -> list[np.ndarray]:
        lines: list[str] = []
        for words in posts:
            lines.append(" " + " ".join(words) + " ")
            lines += [" " + " ".join(words[:k] + words[k + 1 :]) + " " for k in range(len(words))]
        batch = featurize_lines(lines)
        sums = np.bincount(batch.post, weights=self.weights[batch.column], minlength=batch.size)
        logits = sums / batch.norm
        scores, at = [], 0
        for words in posts:
            scores.append(logits[at] - logits[at + 1 : at + 1 + len(words)])
            at += 1 + len(words)
        return scores

    def _word_scores(self, posts: list[list[str]]) -> list[np.ndarray]:
        """Each post's push per folded word from the weights of the n-grams it holds, all posts at once.

        The fallback for long posts, where leaving out each word in turn would cost too much."""
        if not posts:
            return []
        lines = [" " + " ".join(words) + " " for words in posts]
        batch = featurize_lines(lines)
        line_at = np.concatenate([[0], np.cumsum([len(line) + 1 for line in lines])])
        # Every word's [start, end) in the joined lines; n-grams never cross lines, so one search finds the
        # words an n-gram touches, and an n-gram of spaces alone touches none (its last < its first).
        lengths = [np.array([len(w) for w in words], dtype=np.int64) for words in posts]
        starts = np.concatenate(
            [np.zeros(0, dtype=np.int64)]
            + [at + 1 + np.cumsum(size + 1) - (size + 1) for at, size in zip(line_at, lengths, strict=False)]
        )
        ends = starts + np.concatenate([np.zeros(0, dtype=np.int64), *lengths])
        n_start, n_end = batch.start + line_at[batch.post], batch.end + line_at[batch.post]
        first = np.searchsorted(ends, n_start, side="right")
        last = np.searchsorted(starts, n_end, side="left") - 1
        touched = np.maximum(last - first + 1, 0)
        contribution = self.weights[batch.column] / batch.norm[batch.post]
        word = np.repeat(first, touched) + _ranks(touched)
        share = np.repeat(contribution / np.maximum(touched, 1), touched)
        totals = np.bincount(word, weights=share, minlength=len(starts))
        return np.split(totals, np.cumsum([len(words) for words in posts])[:-1])

    # -- files ----------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path = DEFAULT_MODEL) -> Scorer:
        """Read NAME.json and NAME.npz; raise ModelError naming the file and what is wrong."""
        path = Path(path)
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{path}: no such model file (rebuild it with: run_bot.py train)") from None
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ModelError(f"{path}: not a model file: {error}") from None
        _check_meta(path, meta)
        arrays_path = path.with_suffix(".npz")
        try:
            raw = arrays_path.read_bytes()
        except OSError as error:
            raise ModelError(f"{arrays_path}: cannot read the model's arrays: {error.strerror}") from None
        if hashlib.sha256(raw).hexdigest() != meta["arrays_sha256"]:
            raise ModelError(f"{arrays_path}: does not belong to {path.name} (its SHA-256 differs)")
        weights, category_weights = _read_arrays(arrays_path, raw)
        if weights.shape != (DIMENSIONS,) or category_weights.shape != (len(meta["categories"]), DIMENSIONS):
            raise ModelError(f"{arrays_path}: arrays of the wrong shape for {DIMENSIONS} dimensions")
        return cls(
            weights=weights,
            bias=float(meta["bias"]),
            category_weights=category_weights,
            category_bias=np.asarray(meta["category_bias"], dtype=np.float64),
            threshold=float(meta["threshold"]),
            categories=tuple(meta["categories"]),
            meta=meta,
        )

    def save(self, path: Path) -> None:
        """Write NAME.npz, then NAME.json naming the arrays' SHA-256 (same inputs, same bytes).

        Each file is written beside its final name and renamed into place, so a reader never sees half a
        file; a crash between the two renames leaves arrays the old JSON refuses (loudly), never a mix."""
        path = Path(path)
        if path.suffix != ".json":
            raise ModelError(f"{path}: a model file is NAME.json (its arrays go to NAME.npz beside it)")
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays_path = path.with_suffix(".npz")
        arrays = _npz_bytes(
            {
                "weights": self.weights.astype(np.float32),
                "category_weights": self.category_weights.astype(np.float16),
            }
        )
        meta = {
            **self.meta,
            "format": FORMAT,
            "features": FEATURES_VERSION,
            "dimensions": DIMENSIONS,
            "char_ngrams": list(CHAR_NGRAMS),
            "threshold": round(self.threshold, 6),
            "bias": float(self.bias),
            "categories": list(self.categories),
            "category_bias": [float(b) for b in self.category_bias],
            "arrays": arrays_path.name,
            "arrays_sha256": hashlib.sha256(arrays).hexdigest(),
        }
        _replace(arrays_path, arrays)
        _replace(path, (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _replace(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _read_arrays(path: Path, raw: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The two arrays of a model's .npz; ModelError for anything else, a pickled object array included
    (numpy refuses to unpickle it with allow_pickle=False, so no code runs)."""
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as arrays:
            return arrays["weights"].astype(np.float32), arrays["category_weights"].astype(np.float32)
    except KeyError as error:
        raise ModelError(f"{path}: missing array {error}") from None
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise ModelError(f"{path}: not a model's arrays: {error}") from None


def _check_meta(path: Path, meta: Any) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: not a {FORMAT} model file")
    if (
        meta.get("features") != FEATURES_VERSION
        or meta.get("dimensions") != DIMENSIONS
        or meta.get("char_ngrams") != list(CHAR_NGRAMS)
    ):
        raise ModelError(
            f"{path}: made for other features (version {meta.get('features')}, this Ringside computes "
            f"version {FEATURES_VERSION}); retrain it with: run_bot.py train"
        )
    for key in ("threshold", "bias", "categories", "category_bias", "arrays_sha256"):
        if key not in meta:
            raise ModelError(f"{path}: missing key '{key}'")
    threshold = meta["threshold"]
    if not _is_number(threshold) or not 0 < threshold < 1:
        raise ModelError(f"{path}: 'threshold' must be a number between 0 and 1, got {threshold!r}")
    if not _is_number(meta["bias"]):
        raise ModelError(f"{path}: 'bias' must be a number, got {meta['bias']!r}")
    categories, biases = meta["categories"], meta["category_bias"]
    if not isinstance(categories, list) or not categories or not all(isinstance(c, str) for c in categories):
        raise ModelError(f"{path}: 'categories' must be a list of names, got {categories!r}")
    if not isinstance(biases, list) or len(biases) != len(categories) or not all(map(_is_number, biases)):
        raise ModelError(f"{path}: 'category_bias' must be one number per category, got {biases!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz archive (a zip of .npy files) whose entries carry a fixed date, so rebuilds are identical."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -40, 40)))


_JOINERS = frozenset("'’-")


def _whole_words(text: str, spans: list[tuple[int, int]], first: int, last: int) -> tuple[int, int]:
    """The original [start, end) of folded words first..last, grown over words joined to them by an apostrophe
    or a hyphen, so "isn't" is shown whole rather than as "isn" or "t"."""
    while (
        first > 0 and 0 < spans[first][0] - spans[first - 1][1] <= 1 and text[spans[first][0] - 1] in _JOINERS
    ):
        first -= 1
    while (
        last + 1 < len(spans)
        and 0 < spans[last + 1][0] - spans[last][1] <= 1
        and text[spans[last][1]] in _JOINERS
    ):
        last += 1
    return spans[first][0], spans[last][1]


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c-1 for each c in `counts`, concatenated: [2, 1, 3] -> [0, 1, 0, 0, 1, 2]."""
    total = int(counts.sum())
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - offsets


def _phrases(scores: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Up to `limit` runs of words [first, last]: each grown from a strong word over neighbours that help.

    A seed must carry at least a third of the strongest word's push, so a post with one clear reason shows one
    phrase rather than three; a neighbour joins when it pushes at least half as hard as its seed."""
    taken = np.zeros(len(scores), dtype=bool)
    phrases: list[tuple[int, int]] = []
    strongest = float(scores.max()) if len(scores) else 0.0
    for seed in np.argsort(-scores, kind="stable"):
        if len(phrases) == limit or scores[seed] <= 0 or scores[seed] < strongest / 3:
            break
        if taken[seed]:
            continue
        first = last = int(seed)
        floor = scores[seed] * 0.5
        while last - first < 3:
            left = scores[first - 1] if first > 0 and not taken[first - 1] else -np.inf
            right = scores[last + 1] if last + 1 < len(scores) and not taken[last + 1] else -np.inf
            if max(left, right) < floor:
                break
            if left >= right:
                first -= 1
            else:
                last += 1
        taken[first : last + 1] = True
        phrases.append((first, last))
    return sorted(phrases)
