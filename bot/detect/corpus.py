"""The labelled corpus (corpus/train), the frozen blind set (corpus/blind) and the operator's labels.

Every line follows docs/labelling.md: text, label (flag/none), category, lang, platform, author, domain and
writer.
Training reads corpus/train and the operator's labels; it never reads corpus/blind, which only scores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.detect.errors import CorpusError

ROOT = Path(__file__).resolve().parent.parent.parent / "corpus"
TRAIN_DIR = ROOT / "train"
BLIND_DIR = ROOT / "blind"
LABELS = ("flag", "none")
FLAG_CATEGORIES = ("challenge", "taunt", "rivalry", "response")
NONE_CATEGORIES = ("none", "coverage")
_FIELDS = ("text", "label", "category", "lang", "domain", "writer")


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    category: str
    lang: str
    domain: str
    writer: str
    id: str = ""
    platform: str = ""
    weight: float = 1.0

    @property
    def flagged(self) -> bool:
        return self.label == "flag"


def read_examples(path: Path) -> list[Example]:
    """Every line of one JSONL file, checked against the guide's format."""
    examples = []
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                examples.append(_example(json.loads(line), f"{path}:{number}"))
    return examples


def _example(record: dict, where: str) -> Example:
    missing = [key for key in _FIELDS if not isinstance(record.get(key), str) or not record[key]]
    if missing:
        raise CorpusError(f"{where}: missing or empty field(s): {', '.join(missing)}")
    label, category = record["label"], record["category"]
    allowed = FLAG_CATEGORIES if label == "flag" else NONE_CATEGORIES if label == "none" else None
    if allowed is None:
        raise CorpusError(f"{where}: label must be flag or none, got {label!r}")
    if category not in allowed:
        raise CorpusError(f"{where}: category {category!r} does not go with label {label!r}")
    return Example(
        text=record["text"],
        label=label,
        category=category,
        lang=record["lang"],
        domain=record["domain"],
        writer=record["writer"],
        id=str(record.get("id", "")),
        platform=str(record.get("platform", "")),
    )


def read_dir(directory: Path) -> list[Example]:
    """Every *.jsonl file of a directory, in name order."""
    return [example for path in sorted(directory.glob("*.jsonl")) for example in read_examples(path)]


def digest(paths: Iterable[Path]) -> str:
    """SHA-256 over the files' names and bytes, in name order: what a model or a frozen set is pinned to."""
    hasher = hashlib.sha256()
    for path in sorted(paths):
        hasher.update(path.name.encode() + b"\0" + path.read_bytes())
    return hasher.hexdigest()


def near_duplicates(
    candidates: Sequence[str], reference: Sequence[str], threshold: float = 0.8
) -> list[tuple[int, int, float]]:
    """(candidate index, reference index, cosine) for each candidate whose n-gram vector is close to a
    reference's.

    Uses the scorer's own features, so "near" means what the model would see as nearly the same post."""
    from sklearn.preprocessing import normalize

    from bot.detect.features import featurize, sparse_matrix

    if not candidates or not reference:
        return []
    left = normalize(sparse_matrix(featurize(candidates)))
    right = normalize(sparse_matrix(featurize(reference)))
    similarity = (left @ right.T).tocsr()
    found = []
    for row in range(similarity.shape[0]):
        values = similarity.getrow(row)
        if values.nnz and values.data.max() >= threshold:
            best = int(values.indices[np.argmax(values.data)])
            found.append((row, best, float(values.data.max())))
    return found
