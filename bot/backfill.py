"""`run_bot.py backfill FILE`: a replay file of any size stored batch by batch, with a progress line.

Memory stays flat: the file is read as a stream (bot.sources.replay), each batch one transaction with its
cursor, so a stop anywhere resumes from the last committed batch when the command is run again.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from bot.app import build_pipeline
from bot.detect.detector import Detector
from bot.sources.replay import ReplaySource
from config import Settings
from storage import Store

log = logging.getLogger("ringside.backfill")
PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal (a log file)
ATTEMPTS = 3  # polls of one batch before giving up (a busy database, a disk full)


def backfill(
    settings: Settings,
    store: Store,
    detector: Detector,
    path: Path,
    name: str,
    batch: int,
    service: str | None,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Store every post of `path` under the feed `name`:<file name>, from its saved cursor on; then deliver
    the alerts unless `service` (why the service lock is taken) says a running service delivers them.
    0 when the whole file is stored; 1 when a batch kept failing, or `stopping()` turned true (checked
    between batches, so a stop waits for one batch at most): run again to resume."""
    source = ReplaySource(name, path, batch=batch)
    pipeline = build_pipeline(settings, store, paced=False, detector=detector, sources={name: source})
    feed = path.name
    # The progress line says what each batch's log line would (fetched, new): one line instead of hundreds.
    quiet = logging.getLogger("ringside.pipeline")
    quiet.setLevel(max(logging.WARNING, logging.getLogger().level))
    if service:
        log.info("backfill: a service runs on this database; it delivers the alerts (%s)", service)
    progress = Progress(path.stat().st_size, source.bytes_done(store.feed_state(name, feed).cursor))
    failures = 0
    while True:
        saved = pipeline.poll(name, feed)
        if saved is None:
            failures += 1
            if failures >= ATTEMPTS:
                progress.finish()
                log.error(
                    "backfill: the batch failed %d times; run the same command again to resume", failures
                )
                return 1
            time.sleep(1.0)
            continue
        failures = 0
        progress.update(saved.fetched, source.bytes_done(store.feed_state(name, feed).cursor))
        if not saved.more:
            break
        if stopping():
            progress.finish()
            log.info("backfill: stopped; what is stored stays: run the same command again to resume")
            return 1
    progress.finish()
    if not service:
        pipeline.deliver_all()
    return 0


class Progress:
    """One line on stderr: posts stored, posts/s and the time left, estimated from the bytes read."""

    def __init__(self, size: int, start_offset: int, stream: TextIO = sys.stderr) -> None:
        self.size = size
        self.start_offset = start_offset
        self.offset = start_offset
        self.posts = 0
        self.started = self.shown = time.monotonic()
        self.stream = stream
        self.live = stream.isatty()  # a terminal: one line rewritten in place

    def update(self, posts: int, offset: int) -> None:
        self.posts += posts
        self.offset = offset
        if self.live or time.monotonic() - self.shown >= PROGRESS_EVERY:
            self.show()

    def finish(self) -> None:
        self.show()
        if self.live:
            self.stream.write("\n")
        self.stream.flush()

    def show(self) -> None:
        self.shown = time.monotonic()
        print(
            ("\r" if self.live else "") + self.line(self.shown - self.started).ljust(78),
            end="" if self.live else "\n",
            file=self.stream,
            flush=True,
        )

    def line(self, elapsed: float) -> str:
        rate = self.posts / elapsed if elapsed > 0 else 0.0
        done = self.offset / self.size if self.size else 1.0
        read = self.offset - self.start_offset
        left = (self.size - self.offset) * elapsed / read if read > 0 else None
        eta = "?" if left is None else _clock(left)
        return f"backfill: {self.posts:,} posts, {rate:,.0f} posts/s, {done:.0%} of the file, ETA {eta}"


def _clock(seconds: float) -> str:
    minutes, second = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{second:02d}"
