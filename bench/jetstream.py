"""Jetstream benchmark: events/s through the whole pipeline from a local websocket server, and a baseline.

    .venv/bin/python bench/jetstream.py [--events 100000] [--accounts 100] [--seed 3]

A local Jetstream stand-in (a websockets server on 127.0.0.1, in its own process, on another core when there
is one) replays a stream built from the shapes of the recorded events in tests/data/bluesky/: post creates
(plain, replies, quotes with media), edits (update), deletes and identity events, with the labelled corpus's
texts (about 2 % challenges). The Bluesky source in Jetstream mode reads it through the real websockets client
into the real pipeline (the shipped detector: rules and model, SQLite with FTS), pinned to one core.
Printed: events/s and posts/s end to end, and as a baseline the same posts through the replay source and the
same pipeline, with the ratio. Bluesky's whole firehose carries about 2,000 events/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.detect.corpus import TRAIN_DIR, read_dir
from bot.detect.detector import Detector
from bot.detect.matcher import Matcher, load_rules
from bot.detect.scorer import Scorer
from bot.pipeline import Pipeline
from bot.sources.bluesky import BlueskySource
from bot.sources.jetstream import JETSTREAM_FEED, JetstreamSource
from bot.sources.replay import ReplaySource
from config import DEFAULT_RULES
from storage import Store

RECORDED = Path(__file__).resolve().parent.parent / "tests" / "data" / "bluesky"
START_US = 1_764_000_000_000_000


def stream(count: int, accounts: list[str], seed: int) -> list[dict[str, Any]]:
    """`count` events shaped like the recorded ones, time_us strictly increasing."""
    rng = random.Random(seed)
    corpus = read_dir(TRAIN_DIR)
    flags = [e.text for e in corpus if e.flagged]
    others = [e.text for e in corpus if not e.flagged]
    quote = json.loads((RECORDED / "quote_post_view.json").read_text())["record"]
    identity = json.loads((RECORDED / "jetstream_events.jsonl").read_text().splitlines()[1])
    events, made = [], []
    for number in range(count):
        did = rng.choice(accounts)
        time_us = START_US + number * 500
        roll = rng.random()
        if roll < 0.02:
            events.append(identity | {"did": did, "time_us": time_us})
            continue
        if roll < 0.05 and made:
            rkey = rng.choice(made)[1]
            commit = {"operation": "delete", "rkey": rkey}
            events.append(_commit(did, time_us, commit))
            continue
        text = rng.choice(flags) if rng.random() < 0.02 else rng.choice(others)
        record = {"$type": "app.bsky.feed.post", "text": f"{text} {number}", "langs": ["en"]}
        record["createdAt"] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time_us // 1_000_000))
        if roll < 0.25 and made:
            parent = "at://{}/app.bsky.feed.post/{}".format(*rng.choice(made))
            record["reply"] = {"root": {"uri": parent, "cid": "c"}, "parent": {"uri": parent, "cid": "c"}}
        elif roll < 0.35:
            record["embed"] = quote["embed"]
        operation, rkey = "create", f"3k{number:011d}"
        if roll > 0.97 and made:
            operation, (did, rkey) = "update", rng.choice(made)
        made.append((did, rkey))
        commit = {"operation": operation, "rkey": rkey, "record": record, "cid": f"bafy{number}"}
        events.append(_commit(did, time_us, commit))
    return events


def _commit(did: str, time_us: int, commit: dict[str, Any]) -> dict[str, Any]:
    commit = {"rev": f"3l{time_us}", "collection": "app.bsky.feed.post"} | commit
    return {"did": did, "time_us": time_us, "kind": "commit", "commit": commit}


def serve_events(messages: list[str], times: list[int], ready: Any, port: Any) -> None:
    """The Jetstream stand-in: sends every message at or after the client's cursor, then keeps the line."""
    from websockets.sync.server import serve

    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

    def handle(connection: Any) -> None:
        cursor = int(parse_qs(urlparse(connection.request.path).query).get("cursor", ["0"])[0])
        for message, stamp in zip(messages, times, strict=True):
            if stamp >= cursor:
                connection.send(message)
        for _ in connection:
            pass

    with serve(handle, "127.0.0.1", 0) as server:
        port.value = server.socket.getsockname()[1]
        ready.set()
        server.serve_forever()


def jetstream_seconds(detector: Detector, url: str, dids: dict[str, str], last: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        accounts = BlueskySource("bench", None, dids, known_dids=dids)  # type: ignore[arg-type]
        source = JetstreamSource(accounts, url)
        pipeline = Pipeline(store, detector, {"bench": source}, [])
        began, failures = time.perf_counter(), 0
        while store.feed_state("bench", JETSTREAM_FEED).cursor != str(last) and failures < 10:
            failures = 0 if pipeline.poll("bench", JETSTREAM_FEED) else failures + 1
        elapsed = time.perf_counter() - began
        source.close()
        posts = store.db.execute("SELECT count(*) FROM posts").fetchone()[0]
        return elapsed, posts


def replay_seconds(detector: Detector, events: list[dict[str, Any]], handles: dict[str, str]) -> float:
    """The same created posts as a replay file, through the replay source and the same pipeline."""
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "bench.db") as store:
        path = Path(folder) / "posts.jsonl"
        with path.open("w", encoding="utf-8") as out:
            for event in events:
                commit = event.get("commit") or {}
                if commit.get("operation") == "create":
                    record = commit["record"]
                    line = {
                        "platform": "bluesky",
                        "id": f"at://{event['did']}/app.bsky.feed.post/{commit['rkey']}",
                        "author": handles[event["did"]],
                        "text": record["text"],
                        "created_at": record["createdAt"],
                    }
                    out.write(json.dumps(line) + "\n")
        began = time.perf_counter()
        pipeline = Pipeline(store, detector, {"bench": ReplaySource("bench", path)}, [])
        for feed in pipeline.sources["bench"].feeds():
            pipeline.poll("bench", feed)
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    handles = {f"did:plc:bench{n:019d}": f"account{n}.bsky.social" for n in range(args.accounts)}
    events = stream(args.events, list(handles), args.seed)
    messages = [json.dumps(e) for e in events]
    ready, port = multiprocessing.Event(), multiprocessing.Value("i", 0)
    server = multiprocessing.Process(
        target=serve_events, args=(messages, [e["time_us"] for e in events], ready, port), daemon=True
    )
    server.start()
    ready.wait(60)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    detector = Detector(Matcher(load_rules(DEFAULT_RULES)), Scorer.load())
    dids = {handle: did for did, handle in handles.items()}
    url = f"ws://127.0.0.1:{port.value}/subscribe"
    print(f"{len(events):,} Jetstream events from {args.accounts} accounts, shipped detector, one core")
    elapsed, posts = jetstream_seconds(detector, url, dids, events[-1]["time_us"])
    print(f"  jetstream -> pipeline  {len(events) / elapsed:>9,.0f} events/s  ({posts:,} posts stored)")
    baseline = replay_seconds(detector, events, handles)
    creates = sum(1 for e in events if (e.get("commit") or {}).get("operation") == "create")
    print(f"  replay -> pipeline     {creates / baseline:>9,.0f} posts/s   (the same {creates:,} posts)")
    print(f"  jetstream / replay     {(posts / elapsed) / (creates / baseline):>9.2f} (posts/s over posts/s)")
    server.terminate()


if __name__ == "__main__":
    main()
