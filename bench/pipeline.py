"""Pipeline benchmark: posts/s through the whole pipeline on one core, beside a raw SQLite anchor.

    .venv/bin/python bench/pipeline.py [--posts 100000] [--batch 2000] [--seed 5]
    .venv/bin/python bench/pipeline.py --sizes 100000,300000,1000000

The feed is generated here, without the network: texts from corpus/train (six languages) and the demo's
posts (config/replay/), about 2 % of them challenges, with varied ids, authors, kinds (replies, quotes with
mentions), times and the platform JSON kept as `raw`. It goes through the real Pipeline (fetch -> judge ->
store, SQLite file with its indexes and full-text search) in polls of `--batch` posts, pinned to one core,
with the shipped detector (rules and model) and with the model off. In the same run: the store step alone
(Store.save_poll with the posts and no hits), and as the anchor the same rows written by one `executemany`
per batch into a database of the same schema, with the full-text index filled by one statement per batch.

With --sizes, each size runs in a process of its own (one core): the pipeline with the model over a feed
made one poll at a time (the process holds one poll, as the service does, not the whole feed), then the
anchor over the same rows; it prints both rates and the process's peak resident memory, read by this one
with getrusage(RUSAGE_CHILDREN), and how much the peak grew per post since the size before.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.detect.corpus import TRAIN_DIR, read_dir
from bot.detect.detector import Detector
from bot.detect.matcher import Matcher, load_rules
from bot.detect.scorer import Scorer
from bot.models import Fetch, Post
from bot.pipeline import Pipeline
from bot.timeutil import iso, utcnow
from config import DEFAULT_RULES
from storage import Store
from storage.store import POST_COLUMNS, post_values

DEMO = Path(__file__).resolve().parent.parent / "config" / "replay" / "cage-match-2023.jsonl"
INDEX_NEW = (
    "INSERT INTO posts_fts (rowid, text, author) SELECT rowid, text, author FROM posts WHERE rowid > ?"
)
INSERT = f"INSERT INTO posts ({', '.join(POST_COLUMNS)}) VALUES ({', '.join('?' * len(POST_COLUMNS))})"


def median_of_three(measure: Callable[[], float]) -> float:
    """The median of three runs of `measure` (this machine is shared: one run can be far off)."""
    return statistics.median(measure() for _ in range(3))


def realistic_feed(count: int, seed: int) -> list[Post]:
    """`count` posts in time order: about 2 % challenges (flagged corpus texts and the demo's posts)."""
    return list(feed(count, seed))


def feed(count: int, seed: int) -> Iterator[Post]:
    """realistic_feed one post at a time, holding only the last 500 (the ones replies and quotes pick)."""
    rng = random.Random(seed)
    corpus = read_dir(TRAIN_DIR)
    demo = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines() if line.strip()]
    flags = [(e.text, e.lang) for e in corpus if e.flagged] + [(d["text"], d.get("lang")) for d in demo]
    others = [(e.text, e.lang) for e in corpus if not e.flagged]
    authors = [f"account{n:04d}" for n in range(2000)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    posts: deque[Post] = deque(maxlen=500)
    for number in range(count):
        text, lang = rng.choice(flags) if rng.random() < 0.02 else rng.choice(others)
        author = rng.choice(authors)
        created = start + timedelta(milliseconds=number * 700 + rng.randrange(700))
        post_id = str(1_900_000_000_000_000_000 + number * 4096 + rng.randrange(4096))
        kind, reply_to, quote_of, mentions = "post", None, None, ()
        roll = rng.random()
        if roll < 0.2 and posts:
            parent = rng.choice(posts)
            kind, reply_to, mentions = "reply", parent.id, (parent.author,)
        elif roll < 0.25 and posts:
            kind, quote_of = "quote", rng.choice(posts).id
        raw = {
            "id": post_id,
            "text": text,
            "author_id": str(10_000 + authors.index(author)),
            "created_at": iso(created),
            "lang": lang,
            "public_metrics": {"like_count": rng.randrange(500), "retweet_count": rng.randrange(50)},
        }
        post = Post(
            "x",
            post_id,
            author,
            text,
            created,
            author_id=raw["author_id"],
            url=f"https://x.com/{author}/status/{post_id}",
            lang=lang,
            kind=kind,
            reply_to=reply_to,
            quote_of=quote_of,
            mentions=mentions,
            raw=raw,
        )
        posts.append(post)
        yield post


def rows_of(posts: list[Post]) -> list[tuple]:
    """The posts as the tuples `INSERT` takes (built outside any timing)."""
    fetched_at = iso(utcnow())
    return [post_values(post, "bench", fetched_at, 1) for post in posts]


def anchor_rows_per_second(rows: list[tuple], batch: int) -> float:
    """The raw anchor: one executemany of ready tuples and one statement filling the full-text index per
    transaction, into the schema Ringside makes."""
    return anchor_of_batches(rows[start : start + batch] for start in range(0, len(rows), batch))


def anchor_of_batches(batches: Iterable[list[tuple]]) -> float:
    """anchor_rows_per_second of rows that come a batch at a time; only the SQL is timed."""
    count, elapsed = 0, 0.0
    with tempfile.TemporaryDirectory() as folder:
        Store.open(Path(folder) / "bench.db").close()
        conn = sqlite3.connect(Path(folder) / "bench.db", isolation_level=None)
        for rows in batches:
            began = time.perf_counter()
            conn.execute("BEGIN")
            newest = conn.execute("SELECT coalesce(max(rowid), 0) FROM posts").fetchone()[0]
            conn.executemany(INSERT, rows)
            conn.execute(INDEX_NEW, [newest])
            conn.execute("COMMIT")
            elapsed += time.perf_counter() - began
            count += len(rows)
        conn.close()
    return count / elapsed


def save_poll_per_second(posts: list[Post], batch: int) -> float:
    """The store step as the pipeline runs it: Store.save_poll with no hits, one poll per batch."""
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        began = time.perf_counter()
        for number, start in enumerate(range(0, len(posts), batch)):
            polled = tuple(posts[start : start + batch])
            store.save_poll("bench", "all", utcnow(), Fetch(polled, str(number), len(polled)), [], [])
        return len(posts) / (time.perf_counter() - began)


class PollSource:
    """Hands out the feed one poll (batch) at a time; the cursor is the next poll's number."""

    name = platform = "bench"

    def __init__(self, posts: list[Post], batch: int) -> None:
        self.polls = [tuple(posts[i : i + batch]) for i in range(0, len(posts), batch)]

    def feeds(self) -> list[str]:
        return ["all"]

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        index = int(cursor or 0)
        return Fetch(self.polls[index], str(index + 1), len(self.polls[index]))


def pipeline_per_second(detector: Detector, posts: list[Post], batch: int) -> tuple[float, int]:
    """Posts/s through Pipeline.poll over the whole feed, and the hits it stored."""
    source = PollSource(posts, batch)
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        pipeline = Pipeline(store, detector, {"bench": source}, [])
        began = time.perf_counter()
        for _ in source.polls:
            if pipeline.poll("bench", "all") is None:
                raise SystemExit("a poll failed; see the log")
        elapsed = time.perf_counter() - began
        return len(posts) / elapsed, store.counts()["hits"]


class FeedSource(PollSource):
    """PollSource over a feed made one poll at a time (`prepare`, outside the timing), so the process holds
    what the service would: one poll, not the whole feed."""

    def __init__(self, posts: Iterator[Post], batch: int) -> None:
        self.posts, self.batch, self.polls = posts, batch, []

    def prepare(self) -> bool:
        """Makes the next poll; False when the feed is over."""
        poll = tuple(islice(self.posts, self.batch))
        self.polls = [poll]
        return bool(poll)

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        return Fetch(self.polls[0], str(int(cursor or 0) + 1), len(self.polls[0]))


def one_size(count: int, batch: int, seed: int) -> dict[str, float]:
    """Posts/s of the pipeline (rules + model) over `count` posts made a poll at a time, and the raw anchor's
    rows/s over the same posts: for the parent, which reads this process's peak memory when it ends."""
    source = FeedSource(feed(count, seed), batch)
    detector = Detector(Matcher(load_rules(DEFAULT_RULES)), Scorer.load())
    elapsed = 0.0
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        pipeline = Pipeline(store, detector, {"bench": source}, [])
        while source.prepare():
            began = time.perf_counter()
            if pipeline.poll("bench", "all") is None:
                raise SystemExit("a poll failed; see the log")
            elapsed += time.perf_counter() - began
    fetched_at, posts = iso(utcnow()), feed(count, seed)
    polls = iter(lambda: tuple(islice(posts, batch)), ())
    batches = ([post_values(post, "bench", fetched_at, 1) for post in poll] for poll in polls)
    return {"pipeline": count / elapsed, "anchor": anchor_of_batches(batches)}


def by_size(sizes: list[int], batch: int, seed: int) -> None:
    """For each size, in a process of its own: pipeline posts/s, the anchor's rows/s and peak RSS."""
    print(
        f"{'posts':>10} {'pipeline posts/s':>17} {'anchor rows/s':>14} {'peak RSS MiB':>13} "
        f"{'growth KiB/post':>16}"
    )
    previous_size, previous_peak = 0, 0
    for size in sorted(sizes):
        command = [
            sys.executable,
            __file__,
            "--one-size",
            str(size),
            "--batch",
            str(batch),
            "--seed",
            str(seed),
        ]
        finished = subprocess.run(command, capture_output=True, text=True, check=True)
        figures = json.loads(finished.stdout.splitlines()[-1])
        # The largest peak among the children waited for (KiB on Linux): this one's, since sizes ascend and
        # a larger run holds at least as much.
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        growth = f"{(peak - previous_peak) / (size - previous_size):.3f}" if previous_size else "-"
        print(
            f"{size:>10,} {figures['pipeline']:>17,.0f} {figures['anchor']:>14,.0f} {peak / 1024:>13,.0f} "
            f"{growth:>16}",
            flush=True,
        )
        previous_size, previous_peak = size, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--sizes", help="e.g. 100000,300000,1000000: pipeline posts/s, anchor and peak RSS, a process each"
    )
    parser.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if args.one_size:
        print(json.dumps(one_size(args.one_size, args.batch, args.seed)))
        return
    if args.sizes:
        by_size([int(size) for size in args.sizes.split(",")], args.batch, args.seed)
        return
    posts = realistic_feed(args.posts, args.seed)
    matcher = Matcher(load_rules(DEFAULT_RULES))
    print(f"{len(posts):,} posts (6 languages, ~2 % challenges) in polls of {args.batch:,}, one core")
    speed, hits = pipeline_per_second(Detector(matcher, Scorer.load()), posts, args.batch)
    print(f"  pipeline, rules + model        {speed:>9,.0f} posts/s  ({hits:,} hits)")
    speed, hits = pipeline_per_second(Detector(matcher), posts, args.batch)
    print(f"  pipeline, model off            {speed:>9,.0f} posts/s  ({hits:,} hits)")
    store = median_of_three(lambda: save_poll_per_second(posts, args.batch))
    rows = rows_of(posts)
    anchor = median_of_three(lambda: anchor_rows_per_second(rows, args.batch))
    print(f"  store step alone (save_poll)   {store:>9,.0f} posts/s  (median of three)")
    print(f"  raw SQLite anchor (executemany){anchor:>9,.0f} rows/s   (median of three)")
    print(f"  store step / anchor            {store / anchor:>9.2f}")


if __name__ == "__main__":
    main()
