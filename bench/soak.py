"""Soak: many poll and delivery cycles in one process, printing memory as it goes, to show it stays flat.

    .venv/bin/python bench/soak.py [--polls 300] [--batch 1000]

A synthetic source hands out `batch` new posts per poll (English and French, 2 % with challenge words); each
poll is matched, stored and delivered to a channel that accepts everything, as the service does. Prints the
process's resident memory every 50 polls and the time per poll.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.detect.detector import Detector
from bot.detect.matcher import Matcher, load_rules
from bot.models import Fetch, Post
from bot.pipeline import Pipeline
from config import DEFAULT_RULES
from storage import Store

WORDS = (
    "the team shipped a new update today merci à toute l'équipe pour ce lancement rocket launch "
    "podcast meeting semaine réunion café great news"
).split()
HOT = ["I'm up for a cage match", "je te défie", "name the time and place", "quel trouillard"]


class SyntheticSource:
    name = "soak"
    platform = "x"

    def __init__(self, batch: int, seed: int = 5) -> None:
        self.batch = batch
        self.rng = random.Random(seed)
        self.next_id = 0
        self.start = datetime(2026, 1, 1, tzinfo=UTC)

    def feeds(self) -> list[str]:
        return ["all"]

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        posts = []
        for _ in range(self.batch):
            self.next_id += 1
            text = " ".join(self.rng.choices(WORDS, k=self.rng.randint(8, 30)))
            if self.rng.random() < 0.02:
                text += " " + self.rng.choice(HOT)
            posts.append(
                Post(
                    "x",
                    str(self.next_id),
                    f"account{self.rng.randrange(500)}",
                    text,
                    self.start + timedelta(seconds=self.next_id),
                )
            )
        return Fetch(tuple(posts), str(self.next_id), len(posts))


class AcceptAll:
    name = "sink"
    min_interval = 0.0

    def __init__(self) -> None:
        self.sent = 0

    def send(self, alert) -> None:
        self.sent += 1


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "soak.db")
        sink = AcceptAll()
        pipeline = Pipeline(
            store, Detector(Matcher(load_rules(DEFAULT_RULES))), {"soak": SyntheticSource(args.batch)}, [sink]
        )
        print(f"{'polls':>6} {'posts':>9} {'alerts sent':>12} {'RSS MiB':>8} {'ms/poll':>8}")
        started = time.perf_counter()
        window = time.perf_counter()
        for poll in range(1, args.polls + 1):
            pipeline.poll("soak", "all")
            pipeline.deliver_all()
            if poll % 50 == 0 or poll == 1:
                gc.collect()
                elapsed = (time.perf_counter() - window) * 1000 / (50 if poll > 1 else 1)
                print(
                    f"{poll:>6} {poll * args.batch:>9,} {sink.sent:>12,} {rss_mib():>8.1f} {elapsed:>8.1f}",
                    flush=True,
                )
                window = time.perf_counter()
        size = (Path(tmp) / "soak.db").stat().st_size / 2**20
        took = time.perf_counter() - started
        print(f"{args.polls * args.batch:,} posts in {took:.0f}s; database {size:.0f} MiB (plus WAL)")
        store.close()


if __name__ == "__main__":
    main()
