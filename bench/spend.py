"""X spend ledger benchmark: what counting X's reads costs the store step, and what a budget check costs.

    .venv/bin/python bench/spend.py [--posts 20000] [--batch 100] [--seed 5]

Pinned to one core, each figure the median of three, into new database files:
- the ledger's own step (Store._record_x_reads, inside a transaction as save_poll runs it) per poll of
  `--batch` ids (X's page size): new ids, then the same ids again that day (nothing billed);
- for scale, save_poll as X polls run it (realistic posts from bench/pipeline.py, their ids counted), whose
  commit per poll dominates: comparing save_poll with and without the ledger only measured that noise;
- the budget check run before each X poll (today's and this month's spend from the ledger), with a year of
  daily totals for 50 feeds in the table;
- the size of the ledger's per-post rows after one day of `--posts` reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline import median_of_three, realistic_feed
from bot.models import Fetch, Post
from bot.spend import check_budget
from config.settings import XSpend
from storage import Store

DAY = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


def polls_of(posts: list[Post], batch: int) -> list[tuple[Post, ...]]:
    return [tuple(posts[start : start + batch]) for start in range(0, len(posts), batch)]


def save_all(store: Store, polls: list[tuple[Post, ...]]) -> float:
    """Seconds to save every poll as an X poll: posts stored, their ids counted as X's reads."""
    began = time.perf_counter()
    for number, polled in enumerate(polls):
        ids = tuple(post.id for post in polled)
        store.save_poll("x", "all", DAY, Fetch(polled, str(number), len(polled), read_ids=ids), [], [])
    return time.perf_counter() - began


def save_poll_per_second(polls: list[tuple[Post, ...]]) -> float:
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        return sum(len(p) for p in polls) / save_all(store, polls)


def ledger_microseconds(posts: int, batch: int) -> tuple[float, float]:
    """Microseconds per poll of `batch` ids for the ledger step: ids new that day, then the same again."""
    polls = [tuple(str(n) for n in range(start, start + batch)) for start in range(0, posts, batch)]
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        times = []
        for _ in range(2):
            began = time.perf_counter()
            with store.db.atomic():
                for ids in polls:
                    store._record_x_reads("x", "all", DAY, ids)
            times.append((time.perf_counter() - began) / len(polls) * 1e6)
        return times[0], times[1]


def check_microseconds(feeds: int = 50, days: int = 365, checks: int = 2000) -> float:
    """Microseconds per budget check with a year of daily totals for `feeds` feeds in the ledger."""
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        rows = [
            ((DAY - timedelta(days=d)).date().isoformat(), "x", f"feed{f}", 100)
            for d in range(days)
            for f in range(feeds)
        ]
        with store.db.atomic():
            store.db.conn.executemany("INSERT INTO x_read_totals VALUES (?, ?, ?, ?)", rows)
        budget = XSpend(budget_per_day=1e6, budget_per_month=1e8)
        began = time.perf_counter()
        for _ in range(checks):
            check_budget(store, budget, [], DAY)
        return (time.perf_counter() - began) / checks * 1e6


def ledger_bytes(polls: list[tuple[Post, ...]]) -> tuple[int, int]:
    """(per-post rows, bytes their table takes) after one day of these polls."""
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        save_all(store, polls)
        (rows,) = store.db.execute("SELECT count(*) FROM x_reads").fetchone()
        (size,) = store.db.execute("SELECT sum(pgsize) FROM dbstat WHERE name = 'x_reads'").fetchone()
        return rows, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    polls = polls_of(realistic_feed(args.posts, args.seed), args.batch)
    runs = [ledger_microseconds(args.posts, args.batch) for _ in range(3)]
    new, again = (statistics.median(run[i] for run in runs) for i in range(2))
    saving = median_of_three(lambda: save_poll_per_second(polls))
    check = median_of_three(check_microseconds)
    rows, size = ledger_bytes(polls)
    print(f"{args.posts:,} posts in polls of {args.batch}, one core, median of three")
    print(f"ledger step per poll of {args.batch}: {new:,.0f} us new ids, {again:,.0f} us ids already counted")
    print(f"save_poll of X polls, for scale: {saving:,.0f} posts/s")
    print(f"budget check before an X poll (a year of 50 feeds' totals): {check:,.0f} us")
    print(
        f"per-post rows after the day: {rows:,}, {size / 1024:,.0f} KiB ({size / max(rows, 1):.0f} B a post)"
    )


if __name__ == "__main__":
    main()
