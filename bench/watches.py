"""What one evaluation of the frequency, spike and silence watches costs on 1,000,000 posts and 50,000 hits.

    .venv/bin/python bench/watches.py [--posts 1000000] [--hits 50000] [--db /tmp/ringside-bench-watches.db]

Builds the database once as bench/reports.py does (posts spread over a year, 2,000 authors, 100,000 runs)
and reuses it; then times each watch's evaluation, the best of five, and the three together as the
service's watch job runs them. The spike watch also runs with a 30-day baseline, its worst reasonable case.
With --writes it measures instead what the watches' three indexes cost the store step: Store.save_poll of
50,000 realistic posts (bench/pipeline.py's feed) in polls of 2,000, with and without them, best of five.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline import realistic_feed
from bench.reports import best_of, build
from bot.models import Fetch, Post
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
NO_CHANNELS = lambda payload: []  # noqa: E731 (the cost measured is the evaluation, not the outbox)
MONTH_SPIKE = Watch("month-spike", "spike", category="challenge", hours=24, ratio=3, baseline_days=30)
# Quiet for a minute: the evaluation goes on to the feed's polls (500 runs of its own among 100,000).
QUIET_NOW = Watch("three-quiet-now", "silence", people=("three",), days=1 / 1440)


def attach_feeds(store: Store) -> None:
    """bench/reports.py stores posts under source "bench" and polls under "x": make account0003's posts
    come from the polled source, and give that source its cursors, as a poll would have."""
    with store.db.atomic():
        store.db.execute(
            "UPDATE posts SET source = 'x' WHERE platform = 'x' AND lower(author) = 'account0003'"
        )
        store.db.execute(
            "INSERT OR IGNORE INTO cursors (source, feed, updated_at) "
            "SELECT DISTINCT 'x', feed, max(finished_at) FROM runs WHERE source = 'x' GROUP BY feed"
        )


WATCH_INDEXES = ("posts_account_created", "posts_created_key", "hits_post_category")


def save_poll_per_second(posts: list[Post], batch: int, watch_indexes: bool) -> float:
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        if not watch_indexes:  # the indexes of the schema before the watches
            for index in WATCH_INDEXES:
                store.db.execute(f"DROP INDEX {index}")
            store.db.execute("CREATE INDEX posts_created ON posts(created_at)")
        began = time.perf_counter()
        for number, start in enumerate(range(0, len(posts), batch)):
            polled = tuple(posts[start : start + batch])
            store.save_poll("bench", "all", utcnow(), Fetch(polled, str(number), len(polled)), [], [])
        return len(posts) / (time.perf_counter() - began)


def measure_writes() -> None:
    """Alternating runs, the best of five each: the machine is shared, and only the best is repeatable."""
    posts = realistic_feed(50_000, seed=5)
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(5):
        for indexes in runs:
            runs[indexes].append(save_poll_per_second(posts, 2000, watch_indexes=indexes))
    without, with_them = max(runs[False]), max(runs[True])
    print(f"save_poll without the watch indexes: {without:,.0f} posts/s")
    print(f"save_poll with them:                 {with_them:,.0f} posts/s ({with_them / without - 1:+.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--hits", type=int, default=50_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/ringside-bench-watches.db"))
    parser.add_argument("--writes", action="store_true", help="measure what the indexes cost writes")
    args = parser.parse_args()
    if args.writes:
        measure_writes()
        return
    if not args.db.exists():
        build(args.db, args.posts, args.hits, seed=7)
    with Store.open(args.db) as store:
        posts, hits = (store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("posts", "hits"))
        print(f"database: {posts:,} posts, {hits:,} hits")
        attach_feeds(store)
        now = utcnow()
        for watch in (*WATCHES, MONTH_SPIKE, QUIET_NOW):
            seconds = best_of(5, lambda w=watch: evaluate_one(store, w, PEOPLE, NO_CHANNELS, now))
            print(f"{watch.type:9} {watch.name:16} {seconds * 1000:8.1f} ms")
        seconds = best_of(5, lambda: evaluate(store, WATCHES, PEOPLE, NO_CHANNELS, now))
        print(f"all three, one evaluation: {seconds * 1000:.1f} ms")


if __name__ == "__main__":
    main()
