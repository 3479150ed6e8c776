"""One decision per post, from the rules and the learned scorer together.

- A rule of category `veto` that matches suppresses every alert for the post (a known false alarm, such as a
  studio named Octagon); the veto is stored as a silent hit, so the decision can be read back.
- Otherwise a rule of an alerting category that matches makes a hit, as it always did; the hit also carries
  the model's probability and explanation, and its severity moves with the probability (down one below 0.2,
  up one from 0.9).
- Otherwise, when the model's probability reaches the threshold, one hit decided by the model (rule id
  `model`), in the category the model's head finds likeliest, with the phrases that drove the score.
- Silent hits (`response`, `veto`) are kept whatever happens: exchange detection links answers through them.

Scoring is done once per batch (a whole poll); explanations only for posts that hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from bot.detect.matcher import Matcher
from bot.detect.rules import SILENT_CATEGORIES, VETO
from bot.detect.scorer import Scorer
from bot.models import MODEL_RULE, Hit, Post


@dataclass(frozen=True)
class Judgement:
    post: Post
    hits: tuple[Hit, ...]
    probability: float | None  # None when no model is loaded
    rule_hits: tuple[Hit, ...] = ()  # every rule that matched, before the decision (for backtests)

    @property
    def flagged(self) -> bool:
        return any(alerts_on(hit) for hit in self.hits)


def alerts_on(hit: Hit) -> bool:
    """Whether a hit makes an alert: the model's always do; a rule's unless its category is silent."""
    return hit.rule_id == MODEL_RULE or hit.category not in SILENT_CATEGORIES


class Detector:
    """Rules plus an optional scorer. Without a scorer it is the rule pack alone."""

    def __init__(
        self, matcher: Matcher, scorer: Scorer | None = None, threshold: float | None = None
    ) -> None:
        self.matcher = matcher
        self.scorer = scorer
        self.threshold = threshold if threshold is not None else (scorer.threshold if scorer else 1.0)

    @property
    def rules(self) -> list:
        return self.matcher.rules

    def judge(self, posts: Sequence[Post]) -> list[Judgement]:
        """The decision for each post, in order."""
        probabilities = (
            self.scorer.probabilities([p.text for p in posts])
            if self.scorer and posts
            else [None] * len(posts)
        )
        return [self._decide(post, p) for post, p in zip(posts, probabilities, strict=True)]

    def _decide(self, post: Post, probability: float | None) -> Judgement:
        rule_hits = tuple(self.matcher.match(post))
        p = None if probability is None else float(probability)
        silent = tuple(h for h in rule_hits if h.category in SILENT_CATEGORIES)
        if any(h.category == VETO for h in rule_hits):
            return Judgement(post, silent, p, rule_hits)
        alerting = [h for h in rule_hits if h.category not in SILENT_CATEGORIES]
        if alerting:
            why = self._why(post) if p is not None else ()
            hits = tuple(self._with_model(h, p, why) for h in alerting) + silent
            return Judgement(post, hits, p, rule_hits)
        if p is not None and p >= self.threshold:
            return Judgement(post, (self._model_hit(post, p), *silent), p, rule_hits)
        return Judgement(post, silent, p, rule_hits)

    def _why(self, post: Post) -> tuple:
        assert self.scorer is not None
        return self.scorer.explain(post.text)

    def _with_model(self, hit: Hit, p: float | None, why: tuple) -> Hit:
        if p is None:
            return hit
        severity = hit.severity - 1 if p < 0.2 else hit.severity + 1 if p >= 0.9 else hit.severity
        return replace(hit, severity=max(1, min(5, severity)), probability=p, why=why)

    def _model_hit(self, post: Post, p: float) -> Hit:
        assert self.scorer is not None
        why = self._why(post)
        return Hit(
            post.key,
            MODEL_RULE,
            self.scorer.category(post.text),
            model_severity(p, self.threshold),
            spans=why,
            probability=p,
            why=why,
        )


def model_severity(probability: float, threshold: float) -> int:
    """2 just above the threshold, up to 5 for a near-certain flag."""
    if probability >= 0.95:
        return 5
    if probability >= 0.85:
        return 4
    if probability >= max(threshold, 0.7):
        return 3
    return 2
