"""Training the scorer from the labelled corpus and the operator's labels (`run_bot.py train`).

- Features: bot.detect.features, the same function scoring uses.
- Flag model: NB-LR (Wang and Manning, 2012): each feature is first scaled by its log-count ratio, how
  much likelier it is in flagged posts than in others (add-one smoothed), then an L2 logistic regression
  (liblinear) is fitted. Both steps are linear, so the saved weights are the ratio times the regression's
  weight and scoring stays one dot product. Over a plain regression it gained about 3 points of F1 in
  cross-validation. Its strength C and the decision threshold are chosen by
  cross-validation on the corpus with folds grouped by writer, so the figures say how the model does on a
  writer it has never read; the threshold is the one with the best F1 over the out-of-fold probabilities. The
  blind set is never read here.
- Category head: one logistic regression per category over the flagged posts (challenge, taunt, rivalry,
  response), one against the rest.
- The operator's labels count `operator_weight` times a corpus line: they are the operator's own feeds.

Training is deterministic: the same corpus and labels give the same model files, byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bot.detect.corpus import FLAG_CATEGORIES, Example
from bot.detect.features import Batch, featurize, sparse_matrix
from bot.detect.scorer import Scorer

log = logging.getLogger("ringside.train")

STRENGTHS = (3.0, 10.0, 30.0)
FOLDS = 5
OPERATOR_WEIGHT = 3.0


@dataclass(frozen=True)
class CrossValidation:
    strength: float
    threshold: float
    precision: float
    recall: float
    f1: float


def train(
    examples: Sequence[Example],
    strength: float | None = None,
    threshold: float | None = None,
    meta: dict | None = None,
) -> Scorer:
    """A scorer trained on `examples`. Without `strength`/`threshold`, both come from cross-validation."""
    if len({e.label for e in examples}) < 2:
        raise ValueError("training needs posts labelled flag and posts labelled none")
    batch = featurize([e.text for e in examples])
    features = sparse_matrix(batch)
    labels = np.array([e.flagged for e in examples])
    weights = np.array([e.weight for e in examples])
    cv = None
    if strength is None or threshold is None:
        cv = cross_validate(examples, batch, (strength,) if strength is not None else STRENGTHS)
        strength, threshold = cv.strength, threshold if threshold is not None else cv.threshold
    ratios = log_count_ratios(features, labels, weights)
    flag = _flag_model(strength).fit(_scaled(features, ratios), labels, sample_weight=weights)
    categories, category_weights, category_bias = _category_head(examples, features, weights, strength)
    info = dict(meta or {})
    info["strength"] = strength
    if cv is not None:
        info["cross_validation"] = {
            "folds": _fold_description({e.writer for e in examples}),
            "precision": round(cv.precision, 4),
            "recall": round(cv.recall, 4),
            "f1": round(cv.f1, 4),
        }
    return Scorer(
        weights=(flag.coef_[0] * ratios).astype(np.float32),
        bias=float(flag.intercept_[0]),
        category_weights=category_weights,
        category_bias=category_bias,
        threshold=threshold,
        categories=categories,
        meta=info,
    )


def cross_validate(
    examples: Sequence[Example], batch: Batch | None = None, strengths: Sequence[float] = STRENGTHS
) -> CrossValidation:
    """The strength (of `strengths`) and threshold with the best out-of-fold F1, folds grouped by writer."""
    batch = batch or featurize([e.text for e in examples])
    features = sparse_matrix(batch)
    labels = np.array([e.flagged for e in examples])
    weights = np.array([e.weight for e in examples])
    groups = np.array([e.writer for e in examples])
    folds = _folds(labels, groups)
    best: CrossValidation | None = None
    for strength in strengths:
        scores = np.zeros(len(examples))
        for fit_rows, score_rows in folds:
            ratios = log_count_ratios(features[fit_rows], labels[fit_rows], weights[fit_rows])
            model = _flag_model(strength).fit(
                _scaled(features[fit_rows], ratios), labels[fit_rows], sample_weight=weights[fit_rows]
            )
            scores[score_rows] = model.predict_proba(_scaled(features[score_rows], ratios))[:, 1]
        result = best_threshold(scores, labels, strength)
        log.info(
            "C=%g: threshold %.3f, F1 %.3f (P %.3f R %.3f)",
            strength,
            result.threshold,
            result.f1,
            result.precision,
            result.recall,
        )
        if best is None or result.f1 > best.f1 + 1e-9:
            best = result
    assert best is not None
    return best


def log_count_ratios(features, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """log((p / |p|) / (q / |q|)) per column: p and q count (weighted) the posts that have the column among
    flagged and other posts, plus one."""
    present = (features > 0).astype(np.float64)
    p = np.asarray(present[labels].T @ weights[labels]).ravel() + 1.0
    q = np.asarray(present[~labels].T @ weights[~labels]).ravel() + 1.0
    return np.log((p / p.sum()) / (q / q.sum()))


def _scaled(features, ratios: np.ndarray):  # type: ignore[no-untyped-def]
    return features.multiply(ratios).tocsr()


def _folds(labels: np.ndarray, groups: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds grouped by writer (up to FOLDS; a writer is never on both sides), or by post for one writer."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    writers = len(set(groups))
    if writers >= 2:
        splitter = StratifiedGroupKFold(n_splits=min(FOLDS, writers), shuffle=True, random_state=0)
        return list(splitter.split(labels, labels, groups))
    return list(StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=0).split(labels, labels))


def _fold_description(writers: set[str]) -> str:
    if len(writers) >= 2:
        return f"{min(FOLDS, len(writers))}, grouped by writer"
    return f"{FOLDS}, by post (one writer)"


def best_threshold(scores: np.ndarray, labels: np.ndarray, strength: float = 0.0) -> CrossValidation:
    """The threshold in [0.2, 0.8] with the best F1 (the lowest such, on a tie)."""
    best = CrossValidation(strength, 0.5, 0.0, 0.0, -1.0)
    for threshold in np.round(np.arange(0.20, 0.801, 0.01), 2):
        flagged = scores >= threshold
        tp = int(np.sum(flagged & labels))
        fp = int(np.sum(flagged & ~labels))
        fn = int(np.sum(~flagged & labels))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if f1 > best.f1 + 1e-9:
            best = CrossValidation(strength, float(threshold), precision, recall, f1)
    return best


def _flag_model(strength: float):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=strength, solver="liblinear", max_iter=1000, random_state=0)


def _category_head(
    examples: Sequence[Example],
    features,
    weights: np.ndarray,
    strength: float,  # type: ignore[no-untyped-def]
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    rows = np.array([i for i, e in enumerate(examples) if e.flagged and e.category in FLAG_CATEGORIES])
    names = np.array([examples[i].category for i in rows])
    present = tuple(c for c in FLAG_CATEGORIES if c in set(names))
    if len(present) < 2:  # one category (or none) among the flags: it is the answer, whatever the text
        only = present or ("challenge",)
        return only, np.zeros((1, features.shape[1]), dtype=np.float32), np.zeros(1)
    # One binary model per category (one-vs-rest, liblinear): seconds, where a multinomial fit over 262,144
    # columns took half a minute; the likeliest category is the one whose model scores highest.
    coef, intercept = [], []
    for category in present:
        model = _flag_model(strength).fit(features[rows], names == category, sample_weight=weights[rows])
        coef.append(model.coef_[0])
        intercept.append(model.intercept_[0])
    coef, intercept = np.array(coef), np.array(intercept)
    return present, coef.astype(np.float32), intercept.astype(np.float64)
