"""Store-step benchmark: ways to write posts and keep their full-text index, rows/s beside a raw anchor.

    .venv/bin/python bench/store.py [--posts 50000] [--batch 2000] [--seed 5]

Every variant starts from a new database file made by the real schema (migrations, indexes, FTS5 over
posts.text and author, folding diacritics) and writes the same realistic posts (bench/pipeline.py's feed)
in transactions of `--batch` rows, pinned to one core. Printed in one run, each the median of three, as
rows/s and as a ratio of the anchor:
- the anchor: one `executemany` of ready tuples per batch, the index filled by a per-row trigger (schema 7);
- `save_poll` as Ringside calls it (rows built from Post objects, versions looked up, run and cursor saved),
  as this checkout has it;
- the index filled once per batch instead of by the per-row trigger, by key or by rowid range;
- pragmas on top (synchronous=NORMAL in WAL, a 64 MiB cache, temp_store=MEMORY);
- index variants that would change what search can do (contentless: no snippets; detail=column: no
  phrases or NEAR), measured to know what they would buy;
- batch sizes.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline import INSERT, median_of_three, realistic_feed, rows_of, save_poll_per_second
from storage import Store

FILL_BY_KEY = (
    "INSERT INTO posts_fts (rowid, text, author) SELECT rowid, text, author FROM posts WHERE key IN ({})"
)
FILL_BY_ROWID = (
    "INSERT INTO posts_fts (rowid, text, author) SELECT rowid, text, author FROM posts WHERE rowid > ?"
)
PRAGMAS = ("PRAGMA synchronous = NORMAL", "PRAGMA cache_size = -65536", "PRAGMA temp_store = MEMORY")
TOKENIZE = "tokenize = 'unicode61 remove_diacritics 2'"

Setup = Callable[[sqlite3.Connection], None]
Write = Callable[[sqlite3.Connection, list[tuple]], None]


def with_insert_trigger(conn: sqlite3.Connection) -> None:
    """The per-row trigger that filled the index up to schema 7."""
    conn.execute(
        "CREATE TRIGGER posts_ai AFTER INSERT ON posts BEGIN "
        "INSERT INTO posts_fts (rowid, text, author) VALUES (new.rowid, new.text, new.author); END"
    )


def without_insert_trigger(conn: sqlite3.Connection) -> None:
    """Schema 8 as it is: no insert trigger, the index filled per batch."""


def with_pragmas(setup: Setup) -> Setup:
    def both(conn: sqlite3.Connection) -> None:
        setup(conn)
        for pragma in PRAGMAS:
            conn.execute(pragma)

    return both


def other_index(options: str) -> Setup:
    """The FTS table made again with other options, and no triggers (filled per batch)."""

    def remake(conn: sqlite3.Connection) -> None:
        for trigger in ("posts_ad", "posts_au"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DROP TABLE posts_fts")
        conn.execute(f"CREATE VIRTUAL TABLE posts_fts USING fts5(text, author, {options}, {TOKENIZE})")

    return remake


def plain(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    conn.executemany(INSERT, rows)


def fill_by_key(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    conn.executemany(INSERT, rows)
    keys = [row[0] for row in rows]
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        conn.execute(FILL_BY_KEY.format(",".join("?" * len(chunk))), chunk)


def fill_by_rowid(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    before = conn.execute("SELECT coalesce(max(rowid), 0) FROM posts").fetchone()[0]
    conn.executemany(INSERT, rows)
    conn.execute(FILL_BY_ROWID, [before])


def rows_per_second(rows: list[tuple], batch: int, setup: Setup, write: Write) -> float:
    """Rows/s writing `rows` in transactions of `batch`, the median of three new database files."""
    return median_of_three(lambda: _one_run(rows, batch, setup, write))


def _one_run(rows: list[tuple], batch: int, setup: Setup, write: Write) -> float:
    with tempfile.TemporaryDirectory() as folder:
        Store.open(Path(folder) / "bench.db").close()
        conn = sqlite3.connect(Path(folder) / "bench.db", isolation_level=None)
        setup(conn)
        began = time.perf_counter()
        for start in range(0, len(rows), batch):
            conn.execute("BEGIN")
            write(conn, rows[start : start + batch])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - began
        conn.close()
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    posts = realistic_feed(args.posts, args.seed)
    rows = rows_of(posts)
    print(f"{len(rows):,} posts in transactions of {args.batch:,}, one core, a new database file each")
    anchor = rows_per_second(rows, args.batch, with_insert_trigger, plain)
    report = _reporter(anchor)
    report("anchor: executemany, per-row FTS trigger", anchor)
    report(
        "save_poll (Store, Post objects)", median_of_three(lambda: save_poll_per_second(posts, args.batch))
    )
    report(
        "executemany, no indexing at all", rows_per_second(rows, args.batch, other_index("content=''"), plain)
    )
    report(
        "executemany + FTS per batch, by key",
        rows_per_second(rows, args.batch, without_insert_trigger, fill_by_key),
    )
    report(
        "executemany + FTS per batch, by rowid",
        rows_per_second(rows, args.batch, without_insert_trigger, fill_by_rowid),
    )
    report("anchor + pragmas", rows_per_second(rows, args.batch, with_pragmas(with_insert_trigger), plain))
    tuned = with_pragmas(without_insert_trigger)
    report("FTS per batch by key + pragmas", rows_per_second(rows, args.batch, tuned, fill_by_key))
    contentless = other_index("content=''")
    report(
        "contentless FTS per batch (no snippets)", rows_per_second(rows, args.batch, contentless, fill_by_key)
    )
    column = other_index("content='posts', detail=column")
    report(
        "detail=column per batch (no NEAR/phrases)", rows_per_second(rows, args.batch, column, fill_by_key)
    )
    for size in (500, 5000, 20000):
        report(
            f"FTS per batch by key, batches of {size:,}",
            rows_per_second(rows, size, without_insert_trigger, fill_by_key),
        )


def _reporter(anchor: float) -> Callable[[str, float], None]:
    def report(name: str, speed: float) -> None:
        print(f"  {name:<46} {speed:>9,.0f} rows/s  {speed / anchor:>5.2f}x anchor")

    return report


if __name__ == "__main__":
    main()
