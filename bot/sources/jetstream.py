"""Bluesky's Jetstream, for many accounts: one feed ("jetstream") for every account of a `bluesky` source
with `mode = "jetstream"`.

A reader thread keeps a websocket to a Jetstream instance open, asking only for these DIDs' posts from
the saved cursor (Unix microseconds), and queues the events; a fetch drains a batch of them and returns their
posts with the last event's time as the new cursor, so the cursor moves in the same transaction as the posts.
A restart reconnects from there: nothing is lost, and the store's dedup by post key means nothing doubles.
Records become Posts as in poll mode (bluesky.post_from_record).
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from functools import partial
from typing import Any
from urllib.parse import urlencode

from bot.models import Fetch, Post, Rejected
from bot.sources import SourceError, post_or_rejected
from bot.sources.bluesky import MENTION, POST_COLLECTION, BlueskySource, post_from_record  # noqa: F401

log = logging.getLogger("ringside.bluesky")

JETSTREAM_URL = "wss://jetstream2.us-east.bsky.network/subscribe"
JETSTREAM_FEED = "jetstream"
QUEUE_SIZE = 10_000  # events waiting for a fetch; the reader waits (and the server buffers) beyond this
BATCH = 1_000  # events one fetch drains
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 300.0
RETRY_MISSING = 600.0  # seconds between lookups of accounts Bluesky did not know at the last one


class JetstreamSource:
    """Every account's posts from one Jetstream websocket, as one feed whose cursor is Jetstream's time_us.

    The reader thread starts at the first fetch, from the saved cursor. A batch handed out stays pending until
    the next fetch shows its cursor was saved; if it was not (the transaction failed), it is handed out again,
    so an event the reader took is never lost between the queue and the database.
    """

    platform = "bluesky"

    def __init__(
        self,
        accounts: BlueskySource,
        url: str = JETSTREAM_URL,
        timeout: float = 20.0,
        batch: int = BATCH,
        queue_size: int = QUEUE_SIZE,
        backoff: float = BACKOFF_FIRST,
        retry_missing: float = RETRY_MISSING,
    ) -> None:
        self.name = accounts.name
        self.retry_missing = retry_missing
        self._missing: list[str] = []
        self._retry_at = 0.0
        self.backoff = backoff
        self.accounts = accounts
        self.url = url
        self.timeout = timeout
        self.batch = batch
        self.events: queue.Queue[tuple[int | None, Any]] = queue.Queue(maxsize=queue_size)
        self.reader: JetstreamReader | None = None
        self._pending: list[tuple[int | None, Any]] = []

    def feeds(self) -> list[str]:
        return [JETSTREAM_FEED]

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        if self.reader is None:
            self._start(cursor)
        else:
            self._keep_reading(cursor)
        assert self.reader is not None
        batch = self._next_batch(cursor)
        if not batch and self.reader.outage:
            raise SourceError(f"Jetstream connection lost: {self.reader.outage}; reconnecting")
        handles = {did: handle for handle, did in self.accounts.dids.items()}
        posts: dict[str, Post] = {}
        rejected: list[Rejected] = []
        for _, event in batch:
            post = self._post_of(event, handles)
            if isinstance(post, Rejected):
                rejected.append(post)
            elif post is not None:
                posts[post.key] = post  # a later event (an edit) of the same post in one batch wins
        last = next((stamp for stamp, _ in reversed(batch) if stamp is not None), None)
        return Fetch(
            posts=tuple(posts.values()),
            cursor=str(last) if last is not None else cursor,
            read=len(batch),
            accounts=self.accounts.take_learned(),
            rejected=tuple(rejected),
        )

    def close(self) -> None:
        if self.reader is not None:
            self.reader.stop()

    def _start(self, cursor: str | None) -> None:
        """Sign in (a login's service answers app.bsky.* only with a session), look the accounts up and
        start the reader from the saved cursor."""
        self.accounts.sign_in()
        self._missing = self.accounts.resolve_known(self.accounts.accounts)
        self._retry_at = time.monotonic() + self.retry_missing
        for handle in self._missing:
            log.warning("jetstream: no Bluesky account named @%s; left out for now (check the name)", handle)
        dids = sorted({self.accounts.dids[a] for a in self.accounts.accounts if a in self.accounts.dids})
        if not dids:
            raise SourceError("none of the Bluesky accounts could be resolved; nothing to subscribe to")
        start = int(cursor) if cursor and cursor.isdigit() else None
        self.reader = JetstreamReader(self.url, dids, self.events, start, self.timeout, self.backoff)
        self.reader.start()

    def _keep_reading(self, cursor: str | None) -> None:
        """Restart a reader that died, or that must subscribe to accounts found since it started, from
        the last event it queued (else the saved cursor): Jetstream replays from there, and the store's
        dedup by key absorbs the one event read twice."""
        assert self.reader is not None
        alive = self.reader.is_alive()
        if alive and not self._found_missing():
            return
        if not alive:
            why = self.reader.outage or "no error"
            log.warning("jetstream: the reader stopped (%s); starting it again", why)
        resume = self.reader.cursor
        self.reader.stop()
        self._start(str(resume) if resume is not None else cursor)

    def _found_missing(self) -> bool:
        """Whether accounts left out at the last lookup are now known (looked up every retry_missing s)."""
        if not self._missing or time.monotonic() < self._retry_at:
            return False
        self._retry_at = time.monotonic() + self.retry_missing
        try:
            still = self.accounts.resolve_known(self._missing)
        except SourceError as error:
            log.warning("jetstream: looking up @%s again failed: %s", ", @".join(self._missing), error)
            return False
        found = len(still) < len(self._missing)
        self._missing = still
        return found

    def _next_batch(self, cursor: str | None) -> list[tuple[int | None, Any]]:
        """The pending batch again if its cursor was not saved, else the next events (waiting briefly)."""
        saved = int(cursor) if cursor and cursor.isdigit() else None
        pending_end = next((s for s, _ in reversed(self._pending) if s is not None), None)
        if pending_end is not None and (saved is None or saved < pending_end):
            return self._pending
        batch: list[tuple[int | None, Any]] = []
        try:
            batch.append(self.events.get(timeout=min(1.0, self.timeout)))
            while len(batch) < self.batch:
                batch.append(self.events.get_nowait())
        except queue.Empty:
            pass
        self._pending = batch
        return batch

    def _post_of(self, event: Any, handles: dict[str, str]) -> Post | Rejected | None:
        """The Post a commit event creates or updates; None for deletes and identity/account events."""
        if not isinstance(event, dict) or not isinstance(event.get("time_us"), int):
            return Rejected(event, "not a Jetstream event (no time_us)")
        commit = event.get("commit")
        if event.get("kind") != "commit" or not isinstance(commit, dict):
            return None
        if commit.get("collection") != POST_COLLECTION:
            return None
        if commit.get("operation") == "delete":
            log.debug("jetstream: %s deleted post %s (kept as stored)", event.get("did"), commit.get("rkey"))
            return None
        convert = partial(_post_from_commit, handles=handles)
        return post_or_rejected(event, convert)


def _post_from_commit(event: dict[str, Any], handles: dict[str, str]) -> Post:
    commit = event["commit"]
    if commit["operation"] not in ("create", "update"):
        raise ValueError(f"field 'commit.operation' is {commit['operation']!r}, not create/update/delete")
    did = event["did"]
    uri = f"at://{did}/{POST_COLLECTION}/{commit['rkey']}"
    return post_from_record(uri, commit["record"], handles.get(did, did), handles, commit.get("cid"), event)


class JetstreamReader(threading.Thread):
    """Keeps one websocket to Jetstream open and queues its events as (time_us or None, event or text).

    It reconnects from the last event it queued, with exponential backoff and jitter, and logs a lost
    connection once per outage (and once when it is back), not once per attempt."""

    def __init__(
        self,
        url: str,
        dids: list[str],
        events: queue.Queue,
        cursor: int | None,
        timeout: float,
        backoff: float = BACKOFF_FIRST,
    ) -> None:
        super().__init__(name="jetstream-reader", daemon=True)
        self.url = url
        self.dids = dids
        self.events = events
        self.cursor = cursor
        self.timeout = timeout
        self.backoff = backoff
        self.outage: str | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=self.timeout + 5)

    def subscribe_url(self) -> str:
        query = [("wantedCollections", POST_COLLECTION)] + [("wantedDids", did) for did in self.dids]
        if self.cursor is not None:
            query.append(("cursor", str(self.cursor)))
        return f"{self.url}?{urlencode(query)}"

    def run(self) -> None:
        from websockets.sync.client import connect

        delay = self.backoff
        while not self._stopping.is_set():
            try:
                with connect(self.subscribe_url(), open_timeout=self.timeout, max_size=2**22) as socket:
                    if self.outage:
                        log.info("jetstream: connected again after: %s", self.outage)
                    self.outage, delay = None, self.backoff
                    self._read(socket)
                    if self._stopping.is_set():
                        return
                    raise ConnectionError("Jetstream closed the connection")
            except Exception as error:  # any failure is an outage: the thread must live on
                if self.outage is None:
                    self.outage = f"{type(error).__name__}: {error}"[:300]
                    log.warning("jetstream: connection lost (%s); reconnecting with backoff", self.outage)
            self._stopping.wait(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, BACKOFF_MAX)

    def _read(self, socket: Any) -> None:
        while not self._stopping.is_set():
            try:
                message = socket.recv(timeout=1.0)
            except TimeoutError:
                continue
            stamp, event = _decoded(message)
            if stamp is not None:
                self.cursor = stamp
            while not self._stopping.is_set():
                try:
                    self.events.put((stamp, event), timeout=1.0)
                    break
                except queue.Full:
                    continue


def _decoded(message: str | bytes) -> tuple[int | None, Any]:
    try:
        event = json.loads(message)
    except ValueError:
        return None, message if isinstance(message, str) else message.decode("utf-8", "replace")
    stamp = event.get("time_us") if isinstance(event, dict) else None
    return (stamp if isinstance(stamp, int) else None), event
