"""The store: every write Ringside makes to SQLite goes through here.

One poll is one transaction: its posts, hits, outbox rows, run record and new cursor are committed together,
so a crash at any point either keeps all of them or none, and the next poll repeats the work harmlessly
(unique keys make re-fetched posts and re-matched hits no-ops).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from bot.models import Fetch, Hit, Post, span_rows
from bot.timeutil import iso, parse_datetime, utcnow
from storage.exchanges import ExchangeStore
from storage.labels import LabelStore
from storage.outbox import Alert, Outbox
from storage.reports import ReportStore
from storage.schema import DatabaseError, migrate

__all__ = ["Alert", "FeedState", "PollSaved", "Store"]

# SQLite's default limit on bound parameters is 32766 on current builds, 999 on old ones.
_CHUNK = 500


@dataclass(frozen=True)
class FeedState:
    cursor: str | None
    paused_until: datetime | None


@dataclass(frozen=True)
class PollSaved:
    fetched: int
    new_posts: int
    new_hits: int
    alerts: int
    categories: dict[str, int] = field(default_factory=dict)  # new hits per category


class Store(Outbox, ExchangeStore, ReportStore, LabelStore):
    """A Ringside database. Safe to share between threads: writes are serialised by a lock."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.lock = threading.RLock()

    @classmethod
    def open(cls, path: Path | str, create: bool = True) -> Store:
        """Open (creating if needed) and migrate the database at `path`; ":memory:" works for tests.

        With `create` False a missing file is an error rather than a new empty database (for reports)."""
        if str(path) != ":memory:":
            if not create and not Path(path).is_file():
                raise DatabaseError(f"{path}: no database here (has the service run? is storage.path right?)")
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:  # a file is in the way, or no permission
                raise DatabaseError(f"{path}: cannot create its directory: {error.strerror}") from None
        try:
            conn = sqlite3.connect(str(path), check_same_thread=False, timeout=10)
            db = sqlite_utils.Database(conn)
            migrate(db)
            if str(path) != ":memory:":
                db.enable_wal()
        except DatabaseError as error:
            raise DatabaseError(f"{path}: {error}") from None
        except sqlite3.Error as error:
            raise DatabaseError(f"{path}: {error}") from None
        return cls(db)

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- cursors and accounts -------------------------------------------------------------------------

    def feed_state(self, source: str, feed: str) -> FeedState:
        with self.lock:
            row = self.db.execute(
                "SELECT cursor, paused_until FROM cursors WHERE source = ? AND feed = ?", [source, feed]
            ).fetchone()
        if row is None:
            return FeedState(None, None)
        return FeedState(row[0], parse_datetime(row[1]) if row[1] else None)

    def account_ids(self, platform: str) -> dict[str, str]:
        with self.lock:
            rows = self.db.execute("SELECT username, user_id FROM accounts WHERE platform = ?", [platform])
            return dict(rows.fetchall())

    # -- one poll, one transaction --------------------------------------------------------------------

    def save_poll(
        self,
        source: str,
        feed: str,
        started_at: datetime,
        fetch: Fetch,
        hits: Sequence[tuple[Hit, dict[str, Any] | None]],
        channels: Sequence[str],
        throttle: float = 0.0,
        platform: str | None = None,
        link: Callable[[Store, Sequence[Post], dict[str, list[Hit]]], list[dict[str, Any]]] | None = None,
    ) -> PollSaved:
        """Store what one poll found and move its cursor, all in one transaction.

        `hits` pairs each hit with its alert payload (None: store the hit, alert nobody). An outbox row per
        channel is made only for hits not stored before, so polling the same posts again sends nothing twice.
        """
        now = utcnow()
        with self.lock, self.db.atomic():
            new_posts = self._save_posts(source, fetch.posts, now)
            new_hits = self._save_hits(hits, now)
            authors = {post.key: post.author.lower() for post in fetch.posts}
            alerts = self._queue_alerts(new_hits, authors, channels, now, throttle)
            if link is not None:
                by_post: dict[str, list[Hit]] = {}
                for hit, _ in hits:
                    by_post.setdefault(hit.post_key, []).append(hit)
                for payload in link(self, fetch.posts, by_post):
                    alerts += self.queue_notice(channels, payload)
            self._save_accounts(fetch.accounts, now)
            self._set_cursor(source, feed, fetch.cursor, None, now)
            self.db["runs"].insert(
                {
                    "source": source,
                    "feed": feed,
                    "started_at": iso(started_at),
                    "finished_at": iso(now),
                    "fetched": fetch.read,
                    "new": new_posts,
                    "hits": len(new_hits),
                    "error": None,
                    "platform": platform,
                }
            )
        categories: dict[str, int] = {}
        for _, hit, _ in new_hits:
            categories[hit.category] = categories.get(hit.category, 0) + 1
        return PollSaved(fetch.read, new_posts, len(new_hits), alerts, categories)

    def save_failed_poll(
        self,
        source: str,
        feed: str,
        started_at: datetime,
        error: str,
        paused_until: datetime | None = None,
        platform: str | None = None,
    ) -> None:
        """Record a poll that failed. The cursor stays where it was; `paused_until` holds the feed back."""
        now = utcnow()
        with self.lock, self.db.atomic():
            if paused_until is not None:
                state = self.feed_state(source, feed)
                self._set_cursor(source, feed, state.cursor, paused_until, now)
            self.db["runs"].insert(
                {
                    "source": source,
                    "feed": feed,
                    "started_at": iso(started_at),
                    "finished_at": iso(now),
                    "error": error[:1000],
                    "platform": platform,
                }
            )

    def _save_posts(self, source: str, posts: Iterable[Post], now: datetime) -> int:
        rows = {post.key: post_row(post, source, now) for post in posts}
        if not rows:
            return 0
        known = self._existing("posts", "key", list(rows))
        # upsert: a re-fetched post is unchanged, an edited one gets its newest text and version id.
        self.db["posts"].upsert_all(rows.values(), pk="key", batch_size=_CHUNK)
        return len(set(rows) - known)

    def _save_hits(
        self, hits: Sequence[tuple[Hit, dict[str, Any] | None]], now: datetime
    ) -> list[tuple[int, Hit, dict]]:
        if not hits:
            return []
        post_keys = sorted({hit.post_key for hit, _ in hits})
        known = self._hit_ids(post_keys)
        fresh = {(h.post_key, h.rule_id): (h, p) for h, p in hits if (h.post_key, h.rule_id) not in known}
        self.db["hits"].insert_all((hit_row(hit, now) for hit, _ in fresh.values()), batch_size=_CHUNK)
        ids = self._hit_ids(sorted({key for key, _ in fresh}))
        return [(ids[key], hit, payload) for key, (hit, payload) in fresh.items()]

    def _save_accounts(self, accounts: Iterable[tuple[str, str, str]], now: datetime) -> None:
        rows = [
            {"platform": platform, "username": name.lower(), "user_id": uid, "resolved_at": iso(now)}
            for platform, name, uid in accounts
        ]
        if rows:
            self.db["accounts"].upsert_all(rows, pk=("platform", "username"))

    def _set_cursor(
        self, source: str, feed: str, cursor: str | None, paused_until: datetime | None, now: datetime
    ) -> None:
        self.db["cursors"].upsert(
            {
                "source": source,
                "feed": feed,
                "cursor": cursor,
                "paused_until": iso(paused_until) if paused_until else None,
                "updated_at": iso(now),
            },
            pk=("source", "feed"),
        )

    def _existing(self, table: str, column: str, values: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(values):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {column} FROM {table} WHERE {column} IN ({marks})"
            found.update(row[0] for row in self.db.execute(sql, chunk).fetchall())
        return found

    def _hit_ids(self, post_keys: list[str]) -> dict[tuple[str, str], int]:
        ids: dict[tuple[str, str], int] = {}
        for chunk in _chunks(post_keys):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT post_key, rule_id, id FROM hits WHERE post_key IN ({marks})"
            ids.update({(k, r): i for k, r, i in self.db.execute(sql, chunk).fetchall()})
        return ids

    # -- health and the watchdog ------------------------------------------------------------------------

    def watchdog_state(self, source: str, feed: str) -> tuple[datetime | None, bool]:
        """(failing since the last success, already reported) of a feed."""
        with self.lock:
            row = self.db.execute(
                "SELECT failing_since, watchdog_alerted FROM cursors WHERE source = ? AND feed = ?",
                [source, feed],
            ).fetchone()
        if row is None or row[0] is None:
            return None, bool(row and row[1])
        return parse_datetime(row[0]), bool(row[1])

    def set_watchdog_state(self, source: str, feed: str, since: datetime | None, alerted: bool) -> None:
        with self.lock, self.db.atomic():
            self.db["cursors"].upsert(
                {
                    "source": source,
                    "feed": feed,
                    "failing_since": iso(since) if since else None,
                    "watchdog_alerted": int(alerted),
                    "updated_at": iso(utcnow()),
                },
                pk=("source", "feed"),
            )

    # -- small read-outs -------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                table: self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("posts", "hits", "alerts")
            }


def post_row(post: Post, source: str, now: datetime) -> dict[str, Any]:
    return {
        "key": post.key,
        "platform": post.platform,
        "id": post.id,
        "version_id": post.version_id,
        "author": post.author,
        "author_id": post.author_id,
        "text": post.text,
        "url": post.url,
        "created_at": iso(post.created_at),
        "lang": post.lang,
        "kind": post.kind,
        "reply_to": post.reply_to,
        "quote_of": post.quote_of,
        "mentions": json.dumps(list(post.mentions)),
        "conversation_id": post.conversation_id,
        "source": source,
        "fetched_at": iso(now),
        "raw": json.dumps(post.raw, ensure_ascii=False, sort_keys=True),
    }


def hit_row(hit: Hit, now: datetime) -> dict[str, Any]:
    return {
        "post_key": hit.post_key,
        "rule_id": hit.rule_id,
        "category": hit.category,
        "severity": hit.severity,
        "spans": json.dumps(span_rows(hit.spans), ensure_ascii=False),
        "matched_at": iso(now),
        "probability": None if hit.probability is None else round(hit.probability, 4),
        "why": json.dumps(span_rows(hit.why), ensure_ascii=False) if hit.why else None,
    }


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
