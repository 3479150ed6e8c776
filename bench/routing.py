"""Routing's cost: how many alerts a second the router places among 8 filtered channels, and a whole poll of
hits stored with 8 filtered channels against 8 with no filter key (each then gets every hit but the RSS
ones, which are coverage and need `coverage = true`).

    .venv/bin/python bench/routing.py [--posts 5000]

Posts are generated (cage-match challenges by four authors on three platforms, a quarter from an RSS feed),
matched by the shipped rules alone, stored in a temporary SQLite file. Prints decisions per second and the
poll's time and outbox rows for both settings (median of three).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.app import build_pipeline
from bot.routing import Router
from config import DEFAULT_RULES, load_settings
from storage import Store

AUTHORS = [("x", "elonmusk"), ("instagram", "zuck"), ("bluesky", "fan.bsky.social"), ("rss", "lemonde")]
FILTERS = [
    "min_severity = 4",
    'categories = ["challenge", "exchange"]',
    'rules = ["cage-fight", "dare"]',
    'people = ["musk"]',
    'platforms = ["x", "instagram"]',
    'sources = ["feed"]',
    "coverage = true",
    'people = ["zuck"]\nmin_severity = 3\nplatforms = ["instagram", "threads"]',
]


def write_feed(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            platform, author = AUTHORS[i % len(AUTHORS)]
            record = {
                "platform": platform,
                "id": str(i),
                "author": author,
                "text": f"I'm up for a cage match #{i}",
                "created_at": f"2023-06-21T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
            }
            handle.write(json.dumps(record) + "\n")


def settings_text(tmp: Path, feed: Path, filtered: bool) -> str:
    channels = "".join(
        f'[[channels]]\nname = "c{i}"\ntype = "console"\n{FILTERS[i] if filtered else ""}\n' for i in range(8)
    )
    return f"""
[storage]
path = "{tmp}/r.db"
[matcher]
rules = "{DEFAULT_RULES}"
[detector]
model = "off"
[[sources]]
name = "feed"
type = "replay"
path = "{feed}"
batch_size = 100000
[[people]]
id = "musk"
accounts = ["x:elonmusk"]
[[people]]
id = "zuck"
accounts = ["instagram:zuck"]
{channels}"""


def one_poll(tmp: Path, feed: Path, filtered: bool) -> tuple[float, int]:
    """Seconds for one poll of the whole feed into a fresh database, and the outbox rows it made."""
    config = tmp / "ringside.toml"
    config.write_text(settings_text(tmp, feed, filtered), encoding="utf-8")
    settings = load_settings(config, environ={})
    for leftover in tmp.glob("r.db*"):
        leftover.unlink()
    with Store.open(settings.database) as store:
        pipeline = build_pipeline(settings, store, paced=False)
        started = time.perf_counter()
        pipeline.poll("feed", feed.name)
        seconds = time.perf_counter() - started
        rows = store.db.execute("SELECT count(*) FROM alerts").fetchone()[0]
    return seconds, rows


def decisions_per_second(tmp: Path, feed: Path) -> float:
    """Router.channels_for alone, over the alert payloads one poll made."""
    config = tmp / "ringside.toml"
    config.write_text(settings_text(tmp, feed, filtered=True), encoding="utf-8")
    settings = load_settings(config, environ={})
    with Store.open(settings.database) as store:
        payloads = [json.loads(p) for (p,) in store.db.execute("SELECT DISTINCT payload FROM alerts")]
    router = Router([c.name for c in settings.channels], settings.channels, settings.exchanges)
    started = time.perf_counter()
    for payload in payloads:
        router.channels_for(payload, source="feed")
    return len(payloads) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=5000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        feed = tmp / "feed.jsonl"
        write_feed(feed, args.posts)
        print(f"{args.posts} posts, each a cage-fight hit; 8 channels")
        for filtered in (False, True):
            runs = [one_poll(tmp, feed, filtered) for _ in range(3)]
            seconds = statistics.median(s for s, _ in runs)
            label = "8 channels, each filtered" if filtered else "8 channels, no filter key"
            print(f"  {label}: poll {seconds:.2f} s, {runs[0][1]:,} outbox rows (median of three)")
        placed = decisions_per_second(tmp, feed)
        print(f"  router alone: {placed:,.0f} alerts placed per second among 8 channels")


if __name__ == "__main__":
    main()
