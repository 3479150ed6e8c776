"""Backtest: run the detector over a JSONL file of posts before deploying it, and score it against labels.

Each line is a JSON object with at least `text`, and optionally `id`, `platform`, `author`, `lang`, `kind`,
`domain` and `label` ("flag" or "none"). A post counts as flagged when the detector would alert on it: a rule
of an alerting category matches, or the model's probability reaches the threshold, and no veto rule matches.
The rules alone and the model alone are scored too, so a change to either can be weighed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from bot.detect.detector import Detector, Judgement
from bot.models import KINDS, Fetch, Hit, Post, span_rows
from bot.timeutil import utcnow
from config.settings import Exchanges

LABELS = ("flag", "none")
_BATCH = 2000  # posts judged at once, as one poll would be


@dataclass(frozen=True)
class Case:
    post: Post
    label: str | None
    domain: str | None = None

    @property
    def lang(self) -> str | None:
        return (self.post.lang or "").split("-")[0].lower() or None


@dataclass
class Scores:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, flagged: bool, label: str) -> None:
        wanted = label == "flag"
        if flagged and wanted:
            self.tp += 1
        elif flagged:
            self.fp += 1
        elif wanted:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def summary(self) -> str:
        return (
            f"precision={self.precision:.3f} recall={self.recall:.3f} f1={self.f1:.3f} "
            f"tp={self.tp} fp={self.fp} fn={self.fn} tn={self.tn}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }


MODES = ("rules", "model", "combined")


@dataclass
class Result:
    case: Case
    judgement: Judgement
    exchange_link: str | None = None  # how the post answers an exchange (context mode)

    @property
    def hits(self) -> tuple[Hit, ...]:
        return self.judgement.hits

    @property
    def flagged(self) -> bool:
        """The combined decision: what would alert."""
        return self.exchange_link is not None or self.judgement.flagged

    def flagged_by(self, mode: str, threshold: float) -> bool:
        """Whether the rules alone, the model alone (at `threshold`) or both together flag the post."""
        if mode == "combined":
            return self.flagged
        if mode == "rules":
            return self.judgement.verdict == "rules"
        p = self.judgement.probability
        return p is not None and p >= threshold


@dataclass
class Backtest:
    results: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    scores: Scores = field(default_factory=Scores)
    labelled: int = 0
    has_model: bool = False
    threshold: float = 1.0  # the detector's, for scoring the model alone

    def add(self, result: Result) -> None:
        self.results.append(result)
        if result.case.label is not None:
            self.labelled += 1
            self.scores.add(result.flagged, result.case.label)

    def scores_by(self, mode: str, group: str | None = None) -> dict[str, Scores]:
        """Scores of one mode over all labelled posts ("all"), or per value of `group` (lang, domain)."""
        table: dict[str, Scores] = {}
        for result in self.results:
            if result.case.label is None:
                continue
            name = "all" if group is None else (getattr(result.case, group) or "?")
            table.setdefault(name, Scores()).add(result.flagged_by(mode, self.threshold), result.case.label)
        return dict(sorted(table.items()))


def read_cases(path: Path, skipped: list[str], context: bool = False) -> Iterator[Case]:
    """The cases in a JSONL file; each bad line is described in `skipped` ("FILE:LINE: why") and left out.

    In context mode a case is a whole post (platform, author, created_at, optional reply_to, quote_of and
    mentions), as a replay file has it."""
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                yield context_case(record, number) if context else case_from_record(record, number)
            except (ValueError, TypeError) as error:
                skipped.append(f"{path}:{number}: skipped: {error}")


def context_case(record: Any, number: int) -> Case:
    from bot.sources.replay import post_from_record

    case = case_from_record(record, number)
    post = post_from_record({"id": f"line-{number}", **record})
    return Case(post, case.label, case.domain)


def case_from_record(record: Any, number: int) -> Case:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    text = record.get("text")
    if not isinstance(text, str):
        raise ValueError("missing field 'text'")
    label = record.get("label")
    if label is not None and label not in LABELS:
        raise ValueError(f'field \'label\' must be "flag" or "none", got {label!r}')
    kind = record.get("kind", "post")
    if kind not in KINDS:
        raise ValueError(f"field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    post = Post(
        platform=str(record.get("platform") or "backtest"),
        id=str(record.get("id") or f"line-{number}"),
        author=str(record.get("author") or "").lstrip("@"),
        text=text,
        created_at=utcnow(),
        lang=record.get("lang") if isinstance(record.get("lang"), str) else None,
        kind=kind,
    )
    domain = record.get("domain")
    return Case(post, label, domain if isinstance(domain, str) else None)


def backtest_for(detector: Detector) -> Backtest:
    return Backtest(has_model=detector.scorer is not None, threshold=detector.threshold)


def run_backtest(path: Path, detector: Detector) -> Backtest:
    """Judge every case of a JSONL file, in batches as a poll would be judged."""
    outcome = backtest_for(detector)
    return score_cases(read_cases(path, outcome.skipped), detector, outcome)


def score_cases(cases: Iterable[Case], detector: Detector, outcome: Backtest | None = None) -> Backtest:
    outcome = outcome or backtest_for(detector)
    remaining = iter(cases)
    while batch := list(islice(remaining, _BATCH)):
        for case, judgement in zip(batch, detector.judge([c.post for c in batch]), strict=True):
            outcome.add(Result(case, judgement))
    return outcome


def cases_from_verdicts(verdicts: Iterable[Any]) -> Iterator[Case]:
    """The operator's stored verdicts (run_bot.py label) as backtest cases."""
    for verdict in verdicts:
        platform, _, post_id = verdict.post_key.partition(":")
        post = Post(
            platform, post_id, verdict.author, verdict.text, utcnow(), lang=verdict.lang, kind=verdict.kind
        )
        yield Case(post, verdict.label, "operator")


@dataclass(frozen=True)
class _ListSource:
    """Every case's post in one fetch: the backtest's stand-in for a live source."""

    posts: tuple[Post, ...]
    name: str = "backtest"
    platform: str = "backtest"

    def feeds(self) -> list[str]:
        return ["cases"]

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        return Fetch(self.posts, "done", len(self.posts))


def run_context_backtest(path: Path, detector: Detector, exchanges: Exchanges) -> Backtest:
    """Replay the cases in time order through matching and exchange detection with the configured people.

    A post counts as flagged when a rule of a category other than `response` matches it, or when it is an
    answer in an exchange (its second turn or later), so labels on answers are scored like any other.
    """
    from bot.pipeline import Pipeline
    from storage import Store

    outcome = backtest_for(detector)
    cases = sorted(read_cases(path, outcome.skipped, context=True), key=lambda c: c.post.created_at)
    with Store.open(":memory:") as store:
        source = _ListSource(tuple(c.post for c in cases))
        Pipeline(store, detector, {"backtest": source}, [], exchanges=exchanges).poll("backtest", "cases")
        answers = store.answers()
    judgements = detector.judge([c.post for c in cases])
    for case, judgement in zip(cases, judgements, strict=True):
        outcome.add(Result(case, judgement, answers.get(case.post.key)))
    return outcome


def render_text(outcome: Backtest) -> str:
    """The backtest for a terminal: flagged posts with what decided them, the scores of the rules alone, the
    model alone and both together (overall, per language, per domain), then the combined scores last."""
    from bot.alerts import highlight

    def line(result: Result) -> str:
        hits = result.hits
        spans = [[s.start, s.end] for hit in hits for s in hit.spans]
        rules = ",".join(f"{h.rule_id}({h.category})" for h in hits) or "-"
        if result.exchange_link:
            rules += f",exchange({result.exchange_link})"
        p = result.judgement.probability
        score = f"  p={p:.2f}" if p is not None else ""
        text = highlight(result.case.post.text, spans, "**", "**").replace("\n", " ")
        return f"  {result.case.post.id}  {rules}{score}  {text}"

    out = [f"flagged ({sum(r.flagged for r in outcome.results)} of {len(outcome.results)} posts):"]
    out += [line(r) for r in outcome.results if r.flagged]
    if outcome.labelled:
        wrong = [r for r in outcome.results if r.case.label == "none" and r.flagged]
        missed = [r for r in outcome.results if r.case.label == "flag" and not r.flagged]
        out += ["", f"wrongly flagged (labelled none): {len(wrong)}", *map(line, wrong)]
        out += ["", f"missed (labelled flag): {len(missed)}", *map(line, missed)]
        out += ["", *score_table(outcome)]
        s = outcome.scores
        out += [
            "",
            f"{'':>12}{'label flag':>12}{'label none':>12}",
            f"{'flagged':>12}{s.tp:>12}{s.fp:>12}",
            f"{'not flagged':>12}{s.fn:>12}{s.tn:>12}",
            "",
            s.summary(),
        ]
    return "\n".join(out)


def score_table(outcome: Backtest) -> list[str]:
    """Precision, recall and F1 of each mode, overall then per language and per domain."""
    modes = MODES if outcome.has_model else ("rules",)
    header = f"{'':<24}{'posts':>6}" + "".join(f"{mode + ' P/R/F1':>22}" for mode in modes)
    rows = [header]
    for group in (None, "lang", "domain"):
        tables = {mode: outcome.scores_by(mode, group) for mode in modes}
        names = list(tables[modes[0]])
        if group is not None and len(names) < 2:
            continue
        for name in names:
            first = tables[modes[0]][name]
            count = first.tp + first.fp + first.fn + first.tn
            label = name if group is None else f"{group} {name}"
            cells = "".join(
                f"{t.precision:>8.2f}{t.recall:>7.2f}{t.f1:>7.2f}" for t in (tables[m][name] for m in modes)
            )
            rows.append(f"{label:<24}{count:>6}{cells}")
    return rows


def render_json(outcome: Backtest) -> dict[str, Any]:
    """The backtest as one machine-readable object: every post with its score and hits, and every mode's
    scores overall, per language and per domain."""
    modes = MODES if outcome.has_model else ("rules",)
    return {
        "posts": [
            {
                "id": r.case.post.id,
                "label": r.case.label,
                "flagged": r.flagged,
                "probability": None if r.judgement.probability is None else round(r.judgement.probability, 4),
                "exchange": r.exchange_link,
                "hits": [
                    {
                        "rule": h.rule_id,
                        "category": h.category,
                        "severity": h.severity,
                        "spans": span_rows(h.spans),
                        "why": span_rows(h.why),
                    }
                    for h in r.hits
                ],
            }
            for r in outcome.results
        ],
        "skipped": outcome.skipped,
        "scores": outcome.scores.as_dict() if outcome.labelled else None,
        "modes": {
            mode: {
                "all": outcome.scores_by(mode)["all"].as_dict(),
                "lang": {k: v.as_dict() for k, v in outcome.scores_by(mode, "lang").items()},
                "domain": {k: v.as_dict() for k, v in outcome.scores_by(mode, "domain").items()},
            }
            for mode in modes
        }
        if outcome.labelled
        else None,
    }
