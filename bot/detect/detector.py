"""One decision per post, from the rules and the learned scorer together.

- A rule of category `veto` that matches suppresses every alert for the post (a known false alarm, such as a
  studio named Octagon); the veto is stored as a silent hit, so the decision can be read back.
- Otherwise a rule of an alerting category that matches makes a hit, as it always did; the hit also carries
  the model's probability and explanation, and its severity moves with the probability (down one below 0.2,
  up one from 0.9).
- Otherwise, when the model's probability reaches the threshold, one hit decided by the model (rule id
  `model`), in the category the model's head finds likeliest, with the phrases that drove the score. It alerts
  whatever that category, `response` included: by the label guide, accepting a challenge is a flag, and the
  model, unlike a rule's stock phrase, has read the whole post.
- Silent rule hits (`response`, `veto`) are kept whatever happens: exchange detection links answers through
  them.

Scoring and matching are done once per batch (a whole poll), from one fold of each post; explanations only
for posts that hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bot.detect.matcher import Matcher
from bot.detect.normalize import fold_line
from bot.detect.rules import SILENT_CATEGORIES, VETO
from bot.models import MODEL_RULE, Hit, Post

if TYPE_CHECKING:  # scoring needs numpy; a detector of rules alone does not
    from bot.detect.scorer import Scorer


@dataclass(frozen=True)
class Judgement:
    post: Post
    hits: tuple[Hit, ...]
    probability: float | None  # None when no model is loaded
    rule_hits: tuple[Hit, ...] = ()  # every rule that matched, before the decision (for backtests)
    verdict: str = "none"  # what decided: veto, rules, model or none (see Detector.verdict)

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

    def judge(self, posts: Sequence[Post]) -> list[Judgement]:
        """The decision for each post, in order. The scorer and the matcher each run once over the whole
        batch, from one fold of each post (folding is most of matching's time), and the scorer explains at
        once every post that hits."""
        lines = [fold_line(post.text) for post in posts]
        probabilities: list[float | None] = [None] * len(posts)
        if self.scorer is not None and posts:
            probabilities = [float(p) for p in self.scorer.probabilities_of_lines(lines)]
        matched = [tuple(hits) for hits in self.matcher.match_all(posts, lines)]
        verdicts = [self.verdict(hits, p) for hits, p in zip(matched, probabilities, strict=True)]
        explained = self._explanations(posts, verdicts, probabilities)
        return [
            self._judgement(post, hits, p, verdict, explained.get(index, ((), "")))
            for index, (post, hits, p, verdict) in enumerate(
                zip(posts, matched, probabilities, verdicts, strict=True)
            )
        ]

    def verdict(self, rule_hits: tuple[Hit, ...], p: float | None) -> str:
        """veto, rules (an alerting rule matched), model (the model alone reaches the threshold) or none."""
        if any(h.category == VETO for h in rule_hits):
            return "veto"
        if any(h.category not in SILENT_CATEGORIES for h in rule_hits):
            return "rules"
        return "model" if p is not None and p >= self.threshold else "none"

    def _explanations(
        self, posts: Sequence[Post], verdicts: list[str], probabilities: list[float | None]
    ) -> dict[int, tuple[tuple, str]]:
        """Batch index -> (why, category) for each post the model flags, explained in one batch.

        Keyed by index, not post key: a file or a feed can hold one key twice. A rule's hit the model does not
        back needs no reasons, and only the model's own hits need its category."""
        if self.scorer is None:
            return {}
        chosen = [
            i
            for i, (verdict, p) in enumerate(zip(verdicts, probabilities, strict=True))
            if verdict == "model" or (verdict == "rules" and p is not None and p >= self.threshold)
        ]
        why = self.scorer.explain_all([posts[i].text for i in chosen])
        own = [i for i in chosen if verdicts[i] == "model"]
        categories = dict(zip(own, self.scorer.categories_of([posts[i].text for i in own]), strict=True))
        return {i: (w, categories.get(i, "")) for i, w in zip(chosen, why, strict=True)}

    def _judgement(
        self, post: Post, rule_hits: tuple[Hit, ...], p: float | None, verdict: str, explained: tuple
    ) -> Judgement:
        why, category = explained
        silent = tuple(h for h in rule_hits if h.category in SILENT_CATEGORIES)
        if verdict == "rules":
            alerting = [h for h in rule_hits if h.category not in SILENT_CATEGORIES]
            # The model's reasons (explained only when it agrees) back the rule; its probability is kept.
            hits = tuple(self._with_model(h, p, why) for h in alerting) + silent
        elif verdict == "model":
            assert p is not None
            model_hit = Hit(
                post.key, MODEL_RULE, category, model_severity(p, self.threshold), why, probability=p, why=why
            )
            hits = (model_hit, *silent)
        else:
            hits = silent
        return Judgement(post, hits, p, rule_hits, verdict)

    def _with_model(self, hit: Hit, p: float | None, why: tuple) -> Hit:
        if p is None:
            return hit
        severity = hit.severity - 1 if p < 0.2 else hit.severity + 1 if p >= 0.9 else hit.severity
        return replace(hit, severity=max(1, min(5, severity)), probability=p, why=why)


def model_severity(probability: float, threshold: float) -> int:
    """2 just above the threshold, up to 5 for a near-certain flag."""
    if probability >= 0.95:
        return 5
    if probability >= 0.85:
        return 4
    if probability >= max(threshold, 0.7):
        return 3
    return 2
