"""Delivery under a flaky receiver: N alerts to a webhook that fails a share of requests at random.

    .venv/bin/python bench/delivery.py [--alerts 1000] [--fail 0.3] [--seed 1]

The receiver is a real HTTP server on 127.0.0.1. Of its failures, two thirds are plain 500s and one third
take the alert but lose the reply (the connection drops after the receiver has it): the case that makes
at-least-once delivery send a duplicate, which its idempotency key lets the receiver drop. Retries use a
short backoff (50 ms, doubling, at most 1 s) so the run takes seconds, not hours; the logic is the service's.
Prints delivered, duplicates, dead and time taken.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.detect.detector import Detector
from bot.detect.matcher import Matcher, load_rules
from bot.notifiers.webhook import WebhookNotifier
from bot.pipeline import Pipeline
from bot.sources.replay import ReplaySource
from config import DEFAULT_RULES
from config.settings import Delivery
from storage import Store
from tests.receiver import Receiver


def write_feed(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            record = {
                "platform": "x",
                "id": str(i),
                "author": f"fighter{i}",
                "text": f"I'm up for a cage match #{i}",
                "created_at": f"2023-06-21T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
            }
            handle.write(json.dumps(record) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--fail", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Receiver(fail_rate=args.fail, seed=args.seed, lost_reply_share=1 / 3) as receiver,
    ):
        feed = Path(tmp) / "feed.jsonl"
        write_feed(feed, args.alerts)
        store = Store.open(Path(tmp) / "bench.db")
        hook = WebhookNotifier("hook", receiver.url, "bench-secret", timeout=2)
        delivery = Delivery(max_attempts=10, retry_base=0.05, retry_max=1.0)
        pipeline = Pipeline(
            store,
            Detector(Matcher(load_rules(DEFAULT_RULES))),
            {"f": ReplaySource("f", feed)},
            [hook],
            delivery=delivery,
        )
        pipeline.poll("f", feed.name)
        started = time.perf_counter()
        while store.pending_alerts("hook", limit=1):
            pipeline.deliver_all()
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        counts = store.alert_counts()
        store.close()
    accepted = Counter(r.headers["X-Ringside-Idempotency-Key"] for r in receiver.accepted())
    requests = len(receiver.received)
    print(f"{args.alerts} alerts, receiver failing {args.fail:.0%} of requests at random (seed {args.seed})")
    taken = sum(accepted.values())
    print(
        f"requests {requests}: answered 500 {requests - taken}; taken by the receiver {taken}, "
        f"of which {taken - len(accepted)} lost their reply"
    )
    print(
        f"delivered {len(accepted)} distinct alerts; duplicates {sum(accepted.values()) - len(accepted)} "
        f"(each with the same idempotency key); dead {counts.get('dead', 0)}; "
        f"sent per the outbox {counts.get('sent', 0)}; time {elapsed:.1f}s"
    )


if __name__ == "__main__":
    main()
