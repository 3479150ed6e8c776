"""X spend ledger benchmark: what counting X's reads costs the store step, and what a budget check costs.

    .venv/bin/python bench/spend.py [--posts 20000] [--batch 100] [--seed 5]

Realistic posts (bench/pipeline.py's feed) are saved with Store.save_poll in polls of `--batch` posts (X's
page size), into a new database file, pinned to one core, each figure the median of three:
- posts/s without the ledger (no read ids, as for any other platform) and with it (each poll's ids counted
  once per UTC day), and the ledger's cost per poll;
- the same polls read twice on one day (the second time every id is already in the ledger: nothing billed);
- the budget check run before each X poll (today's and this month's spend from the ledger), in
  microseconds, with a year of daily totals for 50 feeds in the table;
- the size of the ledger's per-post rows after one day of `--posts` reads.
"""

from __future__ import annotations

import argparse
import os
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


def save_all(store: Store, polls: list[tuple[Post, ...]], ledger: bool) -> float:
    """Seconds to save every poll; with `ledger`, each poll's post ids are counted as X's reads."""
    began = time.perf_counter()
    for number, polled in enumerate(polls):
        ids = tuple(post.id for post in polled) if ledger else ()
        store.save_poll("x", "all", DAY, Fetch(polled, str(number), len(polled), read_ids=ids), [], [])
    return time.perf_counter() - began


def posts_per_second(polls: list[tuple[Post, ...]], ledger: bool, twice: bool = False) -> float:
    """Posts/s saving the polls into a new database (the second pass only, with `twice`)."""
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        seconds = save_all(store, polls, ledger)
        if twice:
            seconds = save_all(store, polls, ledger)
        return sum(len(p) for p in polls) / seconds


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
        save_all(store, polls, ledger=True)
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
    without = median_of_three(lambda: posts_per_second(polls, ledger=False))
    with_ledger = median_of_three(lambda: posts_per_second(polls, ledger=True))
    again = median_of_three(lambda: posts_per_second(polls, ledger=True, twice=True))
    per_poll = (args.batch / with_ledger - args.batch / without) * 1e6
    print(f"{args.posts:,} posts in polls of {args.batch}, one core, median of three")
    print(f"save_poll without the ledger: {without:,.0f} posts/s")
    print(f"save_poll with the ledger:    {with_ledger:,.0f} posts/s ({with_ledger / without:.2f}x)")
    print(f"  the ledger's cost per poll of {args.batch}: {per_poll:,.0f} us")
    print(f"the same polls again that day (stored, nothing billed): {again:,.0f} posts/s")
    print(f"budget check before an X poll (a year of 50 feeds' totals): {check_microseconds():,.0f} us")
    rows, size = ledger_bytes(polls)
    print(
        f"per-post rows after the day: {rows:,}, {size / 1024:,.0f} KiB ({size / max(rows, 1):.0f} B a post)"
    )


if __name__ == "__main__":
    main()
