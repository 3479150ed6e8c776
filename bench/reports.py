"""Report speed on a large database: 1,000,000 posts and 50,000 hits (alerts, runs and exchanges too).

    .venv/bin/python bench/reports.py [--posts 1000000] [--hits 50000] [--db /tmp/ringside-bench.db]

Builds the database once through the real schema (migrations, indexes, views, full-text triggers) and
reuses it on later runs; then times opening it (with the integrity check every command makes), every report
with no filter and with --since 30d, and a full-text search, each the best of three. Target: every report
under a second.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.timeutil import iso, utcnow
from storage import Store
from storage.reports import REPORTS

WORDS = (
    "cage match fight octagon rocket launch team news update product meeting podcast vegas location "
    "combat prêt lieu semaine équipe réunion chicken copycat feud rival bees cancer zoo"
).split()
CATEGORIES = ("challenge", "rivalry", "taunt", "response")


def build(path: Path, posts: int, hits: int, seed: int) -> None:
    rng = random.Random(seed)
    store = Store.open(path)
    db = store.db
    now = utcnow()
    authors = [f"account{i:04d}" for i in range(2000)]
    started = time.perf_counter()
    with db.atomic():
        rows = []
        for i in range(posts):
            created = now - timedelta(seconds=rng.randrange(365 * 86400))
            author = rng.choice(authors)
            rows.append(
                (
                    f"x:{i}",
                    "x",
                    str(i),
                    author,
                    " ".join(rng.choices(WORDS, k=rng.randint(8, 30))),
                    iso(created),
                    "post",
                    "[]",
                    "bench",
                    iso(created),
                    "{}",
                )
            )
            if len(rows) == 50_000:
                _insert_posts(db, rows)
                rows = []
        _insert_posts(db, rows)
        hit_posts = rng.sample(range(posts), hits)
        db.conn.executemany(
            "INSERT INTO hits (post_key, rule_id, category, severity, spans, matched_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    f"x:{p}",
                    f"rule-{rng.randrange(40)}",
                    rng.choice(CATEGORIES),
                    rng.randint(1, 5),
                    "[]",
                    iso(now),
                )
                for p in hit_posts
            ),
        )
        db.conn.executemany(
            "INSERT INTO alerts (channel, key, hit_id, rule_id, author, payload, status, attempts, "
            "next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?, '{}', ?, 1, ?, ?)",
            (
                (
                    rng.choice(("slack", "hook")),
                    f"k{i}",
                    i + 1,
                    "r",
                    "a",
                    rng.choice(("sent", "sent", "dead")),
                    iso(now),
                    iso(now - timedelta(seconds=rng.randrange(365 * 86400))),
                )
                for i in range(hits)
            ),
        )
        db.conn.executemany(
            "INSERT INTO runs (source, feed, started_at, finished_at, fetched, new, hits, error, platform) "
            "VALUES ('x', ?, ?, ?, ?, ?, 0, ?, 'x')",
            (
                (
                    rng.choice(authors[:200]),
                    iso(t),
                    iso(t),
                    rng.randint(0, 20),
                    rng.randint(0, 5),
                    None if rng.random() > 0.02 else "X server error (503)",
                )
                for t in (now - timedelta(seconds=rng.randrange(365 * 86400)) for _ in range(100_000))
            ),
        )
        for e in range(500):
            first, second = rng.sample(hit_posts, 2)
            at = iso(now - timedelta(days=rng.randrange(365)))
            db.execute(
                "INSERT INTO exchanges VALUES (?, ?, 'open', 4, 2, ?, ?)",
                [f"ex-{e:016x}", json.dumps(["a", "b"]), at, at],
            )
            db.execute(
                "INSERT INTO exchange_turns VALUES (?, 1, ?, 'a', 'first'), (?, 2, ?, 'b', 'response')",
                [f"ex-{e:016x}", f"x:{first}", f"ex-{e:016x}", f"x:{second}"],
            )
    # Ringside indexes new posts once per poll (schema 8: no per-row trigger); these rows came in by SQL.
    db.execute("INSERT INTO posts_fts (posts_fts) VALUES ('rebuild')")
    db.execute("ANALYZE")
    store.close()
    print(
        f"built {posts:,} posts, {hits:,} hits, {hits:,} alerts, 100,000 runs, 500 exchanges "
        f"in {time.perf_counter() - started:.0f}s"
    )


def _insert_posts(db, rows: list[tuple]) -> None:
    db.conn.executemany(
        "INSERT INTO posts (key, platform, id, author, text, created_at, kind, mentions, source, "
        "fetched_at, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def best_of(runs: int, action) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--hits", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--db", type=Path, default=Path("/tmp/ringside-bench.db"))
    args = parser.parse_args()
    marker = args.db.with_name(args.db.name + f".{args.posts}-{args.hits}-{args.seed}")
    if not marker.exists():
        for stale in args.db.parent.glob(args.db.name + "*"):
            stale.unlink()
        build(args.db, args.posts, args.hits, args.seed)
        marker.touch()
    store = Store.open(args.db)
    # Every command opens the file first, and opening checks it (PRAGMA quick_check reads every page).
    opening = best_of(3, lambda: Store.open(args.db, create=False, readonly=True).close())
    size = args.db.stat().st_size / 1e6
    print(f"open and check a {size:,.0f} MB file: {opening:.3f}s (read-only; a report adds its time to this)")
    since = datetime.now(UTC) - timedelta(days=30)
    width = max(len(name) for name in REPORTS)  # rivalry-hits-by-day is the longest name
    print(f"{'report':<{width}} {'rows':>7} {'all, s':>8} {'--since 30d, s':>15}")
    worst = 0.0
    for name in REPORTS:
        rows = len(store.report(name, limit=1000).rows)
        whole = best_of(3, lambda n=name: store.report(n, limit=1000))
        recent = best_of(3, lambda n=name: store.report(n, since=since, limit=1000))
        worst = max(worst, whole, recent)
        print(f"{name:<{width}} {rows:>7,} {whole:>8.3f} {recent:>15.3f}")
    search = best_of(3, lambda: store.search("cage NEAR match", limit=50))
    print(f"{'search':<{width}} {len(store.search('cage NEAR match').rows):>7,} {search:>8.3f}")
    print(f"slowest report: {worst:.3f}s (target: under 1 s)")
    store.close()


if __name__ == "__main__":
    main()
