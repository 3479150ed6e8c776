"""Backtest: run the rules over a JSONL file of posts before deploying them, and score them against labels.

Each line is a JSON object with at least `text`, and optionally `id`, `platform`, `author`, `lang`, `kind` and
`label` ("flag" or "none"). A post counts as flagged when a rule of a category other than `response` matches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.matcher import Matcher
from bot.models import KINDS, Fetch, Hit, Post
from bot.rules import SILENT_CATEGORIES
from bot.timeutil import utcnow
from config.settings import Exchanges

LABELS = ("flag", "none")


@dataclass(frozen=True)
class Case:
    post: Post
    label: str | None


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


@dataclass
class Result:
    case: Case
    hits: list[Hit]
    exchange_link: str | None = None  # how the post answers an exchange (context mode)

    @property
    def flagged(self) -> bool:
        return self.exchange_link is not None or any(h.category not in SILENT_CATEGORIES for h in self.hits)


@dataclass
class Backtest:
    results: list[Result] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    scores: Scores = field(default_factory=Scores)
    labelled: int = 0


def read_cases(path: Path, skipped: list[str], context: bool = False) -> Iterator[Case]:
    """The cases in a JSONL file; each bad line is described in `skipped` ("FILE:LINE: why") and left out.

    In context mode a case is a whole post (platform, author, created_at, optional reply_to, quote_of and
    mentions), as a replay file has it."""
    with path.open(encoding="utf-8", errors="replace") as handle:
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
    return Case(post, case.label)


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
        lang=record.get("lang"),
        kind=kind,
    )
    return Case(post, label)


def run_backtest(path: Path, matcher: Matcher) -> Backtest:
    outcome = Backtest()
    for case in read_cases(path, outcome.skipped):
        result = Result(case, matcher.match(case.post))
        outcome.results.append(result)
        if case.label is not None:
            outcome.labelled += 1
            outcome.scores.add(result.flagged, case.label)
    return outcome


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


def run_context_backtest(path: Path, matcher: Matcher, exchanges: Exchanges) -> Backtest:
    """Replay the cases in time order through matching and exchange detection with the configured people.

    A post counts as flagged when a rule of a category other than `response` matches it, or when it is an
    answer in an exchange (its second turn or later), so labels on answers are scored like any other.
    """
    from bot.pipeline import Pipeline
    from storage import Store

    outcome = Backtest()
    cases = list(read_cases(path, outcome.skipped, context=True))
    with Store.open(":memory:") as store:
        source = _ListSource(tuple(c.post for c in cases))
        Pipeline(store, matcher, {"backtest": source}, [], exchanges=exchanges).poll("backtest", "cases")
        answers = store.answers()
    for case in sorted(cases, key=lambda c: c.post.created_at):
        result = Result(case, matcher.match(case.post), answers.get(case.post.key))
        outcome.results.append(result)
        if case.label is not None:
            outcome.labelled += 1
            outcome.scores.add(result.flagged, case.label)
    return outcome


def render_text(outcome: Backtest) -> str:
    """The backtest for a terminal: flagged posts with their rules and highlights, then the scores."""
    from bot.alerts import highlight

    def line(result: Result) -> str:
        spans = [[s.start, s.end] for hit in result.hits for s in hit.spans]
        rules = ",".join(f"{h.rule_id}({h.category})" for h in result.hits) or "-"
        if result.exchange_link:
            rules += f",exchange({result.exchange_link})"
        text = highlight(result.case.post.text, spans, "**", "**").replace("\n", " ")
        return f"  {result.case.post.id}  {rules}  {text}"

    out = [f"flagged ({sum(r.flagged for r in outcome.results)} of {len(outcome.results)} posts):"]
    out += [line(r) for r in outcome.results if r.flagged]
    if outcome.labelled:
        wrong = [r for r in outcome.results if r.case.label == "none" and r.flagged]
        missed = [r for r in outcome.results if r.case.label == "flag" and not r.flagged]
        out += ["", f"wrongly flagged (labelled none): {len(wrong)}", *map(line, wrong)]
        out += ["", f"missed (labelled flag): {len(missed)}", *map(line, missed)]
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


def render_json(outcome: Backtest) -> dict[str, Any]:
    """The backtest as one machine-readable object."""
    return {
        "posts": [
            {
                "id": r.case.post.id,
                "label": r.case.label,
                "flagged": r.flagged,
                "exchange": r.exchange_link,
                "hits": [
                    {
                        "rule": h.rule_id,
                        "category": h.category,
                        "severity": h.severity,
                        "spans": [[s.start, s.end, s.term] for s in h.spans],
                    }
                    for h in r.hits
                ],
            }
            for r in outcome.results
        ],
        "skipped": outcome.skipped,
        "scores": outcome.scores.as_dict() if outcome.labelled else None,
    }
