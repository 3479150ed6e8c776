"""Detector benchmark: the scorer's posts/s, and the whole pipeline with the scorer on and off, in one run.

    .venv/bin/python bench/detect.py [--posts 50000] [--batch 1000] [--seed 3]

Posts are the labelled corpus's own texts (six languages, as people post: emoji, slang, links), drawn so that
about 2 % are challenges, as in a real feed; each is made unique by a trailing number so nothing is skipped as
already stored. The process is pinned to one core. Printed, each as the median of three passes:

- features alone and scoring (features + dot product) of whole polls at once;
- rule matching, and how many rule queries it evaluates, with rules indexed under the terms they cannot match
  without (as shipped) and under every term (the former way);
- judging (rules, scorer, decision, explanations of the hits) with the model and with the rules alone;
- the whole pipeline (judge, store in SQLite with FTS, queue alerts) with the model and without: the ratio
  says what the scorer costs a poll.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.detect.corpus import TRAIN_DIR, read_dir
from bot.detect.detector import Detector
from bot.detect.features import featurize
from bot.detect.matcher import Matcher, load_rules
from bot.detect.scorer import Scorer
from bot.models import Fetch, Post
from bot.pipeline import Pipeline
from config import DEFAULT_RULES
from storage import Store


def realistic_posts(count: int, seed: int) -> list[Post]:
    rng = random.Random(seed)
    corpus = read_dir(TRAIN_DIR)
    flags = [e.text for e in corpus if e.flagged]
    others = [e.text for e in corpus if not e.flagged]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    posts = []
    for number in range(count):
        text = rng.choice(flags) if rng.random() < 0.02 else rng.choice(others)
        posts.append(
            Post(
                "x",
                str(number),
                f"account{rng.randrange(500)}",
                f"{text} {number}",
                start + timedelta(seconds=number),
            )
        )
    return posts


def best_of_three(run) -> float:  # type: ignore[no-untyped-def]
    """The median of three timed passes, after one untimed pass that warms caches."""
    run()
    times = []
    for _ in range(3):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def evaluations(matcher: Matcher, posts: list[Post]) -> int:
    """How many rule query trees matching these posts evaluates."""
    return sum(len(matcher.candidates_of(found)) for p in posts if (found := matcher.find_terms(p.text)))


def batches(posts: list[Post], size: int) -> list[list[Post]]:
    return [posts[i : i + size] for i in range(0, len(posts), size)]


class PollSource:
    """Hands out the posts one poll (batch) at a time."""

    name = platform = "bench"

    def __init__(self, polls: list[list[Post]]) -> None:
        self.polls = polls

    def feeds(self) -> list[str]:
        return ["all"]

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        index = int(cursor or 0)
        return Fetch(tuple(self.polls[index]), str(index + 1), len(self.polls[index]))


def pipeline_seconds(detector: Detector, polls: list[list[Post]]) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        pipeline = Pipeline(store, detector, {"bench": PollSource(polls)}, [])
        began = time.perf_counter()
        hits = 0
        for _ in polls:
            saved = pipeline.poll("bench", "all")
            hits += saved.new_hits if saved else 0
        return time.perf_counter() - began, hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    posts = realistic_posts(args.posts, args.seed)
    polls = batches(posts, args.batch)
    scorer = Scorer.load()
    matcher = Matcher(load_rules(DEFAULT_RULES))
    with_model, rules_only = Detector(matcher, scorer), Detector(matcher)
    n = len(posts)
    print(f"{n:,} posts in polls of {args.batch}, one core, median of three passes after a warm-up")

    features = best_of_three(lambda: [featurize([p.text for p in poll]) for poll in polls])
    scoring = best_of_three(lambda: [scorer.probabilities([p.text for p in poll]) for poll in polls])
    print(f"  features alone             {n / features:>10,.0f} posts/s")
    print(f"  scorer (features + model)  {n / scoring:>10,.0f} posts/s")

    every = Matcher(load_rules(DEFAULT_RULES), index_every_term=True)
    lean_count, every_count = evaluations(matcher, posts), evaluations(every, posts)
    print(f"  rules evaluated            {lean_count:>10,} (indexed under every term: {every_count:,})")
    matching = best_of_three(lambda: [matcher.match(p) for p in posts])
    matching_every = best_of_three(lambda: [every.match(p) for p in posts])
    print(
        f"  matching                   {n / matching:>10,.0f} posts/s (every term: {n / matching_every:,.0f})"
    )

    judged_model = best_of_three(lambda: [with_model.judge(poll) for poll in polls])
    judged_rules = best_of_three(lambda: [rules_only.judge(poll) for poll in polls])
    flagged = sum(j.flagged for poll in polls for j in with_model.judge(poll))
    print(f"  judge, rules + model       {n / judged_model:>10,.0f} posts/s  ({flagged:,} flagged)")
    print(f"  judge, rules alone         {n / judged_rules:>10,.0f} posts/s")

    on = statistics.median(pipeline_seconds(with_model, polls)[0] for _ in range(3))
    off = statistics.median(pipeline_seconds(rules_only, polls)[0] for _ in range(3))
    print(f"  pipeline, rules + model    {n / on:>10,.0f} posts/s")
    print(f"  pipeline, rules alone      {n / off:>10,.0f} posts/s")
    print(
        f"  the scorer costs the pipeline {on / off - 1:.0%} of its time (ratio {off / on:.2f} of the speed)"
    )


if __name__ == "__main__":
    main()
