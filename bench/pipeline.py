"""Pipeline benchmark: posts/s through the whole pipeline on one core, beside a raw SQLite anchor.

    .venv/bin/python bench/pipeline.py [--posts 100000] [--batch 2000] [--seed 5]
    .venv/bin/python bench/pipeline.py --rss [100000 300000 1000000]

The feed is generated here, without the network: texts from corpus/train (six languages) and the demo's
posts (config/replay/), about 2 % of them challenges, with varied ids, authors, kinds (replies, quotes with
mentions), times and the platform JSON kept as `raw`. It goes through the real Pipeline (fetch -> judge ->
store, SQLite file with its indexes and full-text search) in polls of `--batch` posts, pinned to one core,
with the shipped detector (rules and model) and with the model off. In the same run: the store step alone
(Store.save_poll with the posts and no hits), and as the anchor the same rows written by one `executemany`
per batch into a database of the same schema, with the full-text index filled by one statement per batch.

With --rss, each size runs in a process of its own that streams the generated feed through the pipeline
(rules and model) in polls of --batch posts and reports its peak RSS: memory must stay flat with the size.
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
from collections.abc import Callable, Iterator
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
    return list(realistic_stream(count, seed))


def realistic_stream(count: int, seed: int) -> Iterator[Post]:
    """The posts of realistic_feed one at a time, keeping only the last 500 (which replies and quotes point
    at), so a feed of millions costs the generator nothing: the memory measured is the pipeline's."""
    rng = random.Random(seed)
    corpus = read_dir(TRAIN_DIR)
    demo = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines() if line.strip()]
    flags = [(e.text, e.lang) for e in corpus if e.flagged] + [(d["text"], d.get("lang")) for d in demo]
    others = [(e.text, e.lang) for e in corpus if not e.flagged]
    authors = [f"account{n:04d}" for n in range(2000)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    recent: deque[Post] = deque(maxlen=500)
    for number in range(count):
        text, lang = rng.choice(flags) if rng.random() < 0.02 else rng.choice(others)
        author_number = rng.randrange(len(authors))
        author = authors[author_number]
        created = start + timedelta(milliseconds=number * 700 + rng.randrange(700))
        post_id = str(1_900_000_000_000_000_000 + number * 4096 + rng.randrange(4096))
        kind, reply_to, quote_of, mentions = "post", None, None, ()
        roll = rng.random()
        if roll < 0.2 and recent:
            parent = rng.choice(recent)
            kind, reply_to, mentions = "reply", parent.id, (parent.author,)
        elif roll < 0.25 and recent:
            kind, quote_of = "quote", rng.choice(recent).id
        raw = {
            "id": post_id,
            "text": text,
            "author_id": str(10_000 + author_number),
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
        recent.append(post)
        yield post


def rows_of(posts: list[Post]) -> list[tuple]:
    """The posts as the tuples `INSERT` takes (built outside any timing)."""
    fetched_at = iso(utcnow())
    return [post_values(post, "bench", fetched_at, 1) for post in posts]


def anchor_rows_per_second(rows: list[tuple], batch: int) -> float:
    """The raw anchor: one executemany of ready tuples and one statement filling the full-text index per
    transaction, into the schema Ringside makes."""
    with tempfile.TemporaryDirectory() as folder:
        Store.open(Path(folder) / "bench.db").close()
        conn = sqlite3.connect(Path(folder) / "bench.db", isolation_level=None)
        began = time.perf_counter()
        for start in range(0, len(rows), batch):
            conn.execute("BEGIN")
            newest = conn.execute("SELECT coalesce(max(rowid), 0) FROM posts").fetchone()[0]
            conn.executemany(INSERT, rows[start : start + batch])
            conn.execute(INDEX_NEW, [newest])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - began
        conn.close()
    return len(rows) / elapsed


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


class StreamSource:
    """Hands out a generated stream one poll of `batch` posts at a time, as the replay source reads a file:
    the feed is never whole in memory, so peak RSS is the pipeline's own."""

    name = platform = "bench"

    def __init__(self, posts: Iterator[Post], batch: int) -> None:
        self.posts, self.batch = posts, batch

    def feeds(self) -> list[str]:
        return ["all"]

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        polled = tuple(islice(self.posts, self.batch))
        return Fetch(polled, str(int(cursor or 0) + 1), len(polled), more=len(polled) == self.batch)


def stream_through_pipeline(count: int, seed: int, batch: int) -> None:
    """Run `count` streamed posts through the pipeline (rules + model) and print posts/s and this process's
    peak RSS as one JSON line: the child's side of --rss."""
    detector = Detector(Matcher(load_rules(DEFAULT_RULES)), Scorer.load())
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        pipeline = Pipeline(
            store, detector, {"bench": StreamSource(realistic_stream(count, seed), batch)}, []
        )
        floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        began = time.perf_counter()
        saved = pipeline.poll_until_caught_up("bench", "all")
        elapsed = time.perf_counter() - began
        if saved is None or store.counts()["posts"] != count:
            raise SystemExit("a poll failed or lost posts; see the log")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"posts": count, "per_second": count / elapsed, "floor_kb": floor, "peak_kb": peak}))


def peak_rss(count: int, seed: int, batch: int) -> dict:
    """Posts/s and peak RSS of a fresh process streaming `count` posts (each size its own process, so one
    size's peak cannot hide another's)."""
    command = [sys.executable, __file__, "--rss-child", "--posts", str(count), "--seed", str(seed)]
    done = subprocess.run([*command, "--batch", str(batch)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the run of {count:,} posts failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_peak_rss(sizes: list[int], seed: int, batch: int) -> None:
    print(f"peak RSS streaming through the pipeline (rules + model), polls of {batch:,}, one core:")
    runs = [peak_rss(size, seed, batch) for size in sizes]
    for run in runs:
        peak, floor = run["peak_kb"] / 1024, run["floor_kb"] / 1024
        print(
            f"  {run['posts']:>9,} posts  {run['per_second']:>7,.0f} posts/s"
            f"  peak {peak:>6.0f} MB  (detector loaded, store open: {floor:.0f} MB)"
        )
    growth = runs[-1]["peak_kb"] / runs[0]["peak_kb"] - 1
    print(f"  growth from {runs[0]['posts']:,} to {runs[-1]['posts']:,} posts: {growth:+.1%}")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--rss", type=int, nargs="*", metavar="POSTS", help="peak RSS at these sizes (default 100k 300k 1M)"
    )
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if args.rss_child:
        stream_through_pipeline(args.posts, args.seed, args.batch)
        return
    if args.rss is not None:
        print_peak_rss(args.rss or [100_000, 300_000, 1_000_000], args.seed, args.batch)
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
