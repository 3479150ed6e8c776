"""What one evaluation of the frequency, spike and silence watches costs on 1,000,000 posts and 50,000 hits.

    .venv/bin/python bench/watches.py [--posts 1000000] [--hits 50000] [--db /tmp/ringside-bench-watches.db]

Builds the database once as bench/reports.py does (posts spread over a year, 2,000 authors, 100,000 runs)
and reuses it; then times each watch's evaluation, the best of five, and the three together as the
service's watch job runs them. The spike watch also runs with a 30-day baseline, its worst reasonable case.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.reports import build
from bot.timeutil import utcnow
from bot.watches import evaluate, evaluate_one
from config.settings import Exchanges, Person
from config.watches import Watch
from storage import Store

PEOPLE = Exchanges(
    people=(
        Person("one", "Account One", frozenset({"x:account0001"})),
        Person("two", "Account Two", frozenset({"x:account0002", "threads:account0002"})),
        Person("three", "Account Three", frozenset({"x:account0003"})),
    )
)
WATCHES = (
    Watch("one-two", "frequency", people=("one", "two"), count=3, hours=48),
    Watch("challenge-surge", "spike", category="challenge", hours=6, ratio=3, baseline_days=7, min_hits=5),
    Watch("three-quiet", "silence", people=("three",), days=3),
)
MONTH_SPIKE = Watch("month-spike", "spike", category="challenge", hours=24, ratio=3, baseline_days=30)


def best_of(runs: int, work) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--hits", type=int, default=50_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/ringside-bench-watches.db"))
    args = parser.parse_args()
    if not args.db.exists():
        build(args.db, args.posts, args.hits, seed=7)
    with Store.open(args.db) as store:
        posts, hits = (store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("posts", "hits"))
        print(f"database: {posts:,} posts, {hits:,} hits")
        now = utcnow()
        for watch in (*WATCHES, MONTH_SPIKE):
            seconds = best_of(5, lambda w=watch: evaluate_one(store, w, PEOPLE, [], now))
            print(f"{watch.type:9} {watch.name:16} {seconds * 1000:8.1f} ms")
        seconds = best_of(5, lambda: evaluate(store, WATCHES, PEOPLE, [], now))
        print(f"all three, one evaluation: {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
