"""The store: every write Ringside makes to SQLite goes through here.

One poll is one transaction: its posts, hits, outbox rows, run record and new cursor are committed together,
so a crash at any point either keeps all of them or none, and the next poll repeats the work harmlessly
(unique keys make re-fetched posts and re-matched hits no-ops).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from bot.models import Fetch, Hit, Post, Rejected, span_rows
from bot.timeutil import iso, parse_datetime, utcnow
from storage.exchanges import ExchangeStore
from storage.history import HistoryStore
from storage.labels import LabelStore
from storage.opening import check_intact, check_schema, check_writable, connect, what_is_wrong
from storage.outbox import Alert, ChannelsFor, Outbox
from storage.reports import ReportStore
from storage.schema import DatabaseError, migrate
from storage.slack import SlackStore
from storage.spend import SpendStore
from storage.versions import History, VersionPlan
from storage.watches import WatchStore

__all__ = ["Alert", "ChannelsFor", "FeedState", "Found", "PollSaved", "Store"]

# A hit, the post it was found in (that version's text: the same key may come twice in one poll with other
# texts) and its alert payload (None: store the hit, alert nobody).
Found = tuple[Post, Hit, dict[str, Any] | None]

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
    quarantined: tuple[str, ...] = ()  # the errors of the records quarantined for the first time
    more: bool = False  # the source has more posts ready now (set by the pipeline from the fetch)
    billed: int = 0  # X posts billed for the first time today (the spend ledger)


class Store(Outbox, ExchangeStore, ReportStore, LabelStore, SlackStore, SpendStore, HistoryStore, WatchStore):
    """A Ringside database. Safe to share between threads: writes are serialised by a lock."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.lock = threading.RLock()

    @classmethod
    def open(cls, path: Path | str, create: bool = True, readonly: bool = False) -> Store:
        """Open (creating if needed) and migrate the database at `path`; ":memory:" works for tests.

        With `create` False a missing file is an error rather than a new empty database. With `readonly` the
        file is only read (reports, search): it may be read-only on disk or in a read-only directory, and a
        database that would need upgrading is refused rather than changed. A file is checked before use
        (PRAGMA quick_check): a damaged one, a file that is not SQLite, or a read-only file opened to write,
        is a DatabaseError naming the file and what is wrong."""
        if str(path) == ":memory:":
            db = sqlite_utils.Database(sqlite3.connect(":memory:", check_same_thread=False))
            migrate(db)
            return cls(db)
        path = Path(path)
        if not path.is_file():
            if not create or readonly:
                raise DatabaseError(f"{path}: no database here (has the service run? is storage.path right?)")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:  # a file is in the way, or no permission
                raise DatabaseError(f"{path}: cannot create its directory: {error.strerror}") from None
        try:
            if not readonly:
                check_writable(path)
            db = sqlite_utils.Database(connect(path, readonly))
            check_intact(db)
            if readonly:
                check_schema(db)
            else:
                migrate(db)
                db.enable_wal()
        except DatabaseError as error:
            raise DatabaseError(f"{path}: {error}") from None
        except sqlite3.Error as error:
            raise DatabaseError(f"{path}: {what_is_wrong(error)}") from None
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
        hits: Sequence[Found],
        channels: Sequence[str] | ChannelsFor,
        throttle: float = 0.0,
        platform: str | None = None,
        link: Callable[[Store, Sequence[Post], dict[str, list[Hit]]], list[dict[str, Any]]] | None = None,
    ) -> PollSaved:
        """Store what one poll found and move its cursor, all in one transaction.

        A post fetched again with other text gets a new version (see storage.versions); its hits are stored
        against the version they matched. A rule makes one hit per post, at the first version it matches: an
        outbox row per channel is made only for hits not stored before, so polling the same posts again, or
        a new version that the same rule matches again, sends nothing twice, while a rule that newly matches
        a new version alerts with that version's text. `fetch.rejected` goes into the quarantine.
        `channels` is every channel, or a function (bot.routing) naming the channels each payload goes to.
        `fetch.read_ids` enter the X spend ledger on the UTC day of `started_at`, in the same transaction.
        """
        route = channels if callable(channels) else _to_all(channels)
        now = utcnow()
        with self.lock, self.db.atomic():
            new_posts, versions = self._save_posts(source, fetch.posts, now)
            new_hits = self._save_hits(hits, versions, now)
            authors = {post.key: post.author.lower() for post in fetch.posts}
            alerts = self._queue_alerts(new_hits, authors, route, now, throttle)
            if link is not None:
                by_post: dict[str, list[Hit]] = {}
                for _, hit, _ in hits:
                    by_post.setdefault(hit.post_key, []).append(hit)
                for payload in link(self, fetch.posts, by_post):
                    alerts += self.queue_notice(route(payload), payload)
            self._save_accounts(fetch.accounts, now)
            quarantined = self._quarantine(source, feed, fetch.rejected, now)
            billed = self._record_x_reads(source, feed, started_at, fetch.read_ids) if fetch.read_ids else 0
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
        return PollSaved(fetch.read, new_posts, len(new_hits), alerts, categories, quarantined, billed=billed)

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

    def pause_feeds(self, source: str, feeds: Sequence[str], until: datetime) -> None:
        """Hold these feeds back until `until`, their cursors kept (a limit on the whole source)."""
        now = utcnow()
        with self.lock, self.db.atomic():
            for feed in feeds:
                self._set_cursor(source, feed, self.feed_state(source, feed).cursor, until, now)

    def _save_posts(
        self, source: str, posts: Sequence[Post], now: datetime
    ) -> tuple[int, dict[tuple[str, str], int]]:
        """Store new posts and new versions of known ones, never losing a text already stored.

        Returns how many posts are new, and the version number of each (key, text) among `posts`."""
        if not posts:
            return 0, {}
        plan = VersionPlan(self._histories(sorted({post.key for post in posts})))
        for post in posts:
            plan.add(post)
        for chunk in _chunks(plan.archive):
            self.db.execute(
                "INSERT INTO post_versions (post_key, version, version_id, text, raw, first_seen) "
                "SELECT key, version, version_id, text, raw, fetched_at FROM posts "
                f"WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
        fetched_at = iso(now)
        new, changed = [], []
        for post, number in plan.current.values():
            row = post_values(post, source, fetched_at, number)
            (changed if plan.histories[post.key].stored else new).append(row)
        # Plain tuples through one prepared statement: sqlite-utils' upsert_all built a dict per row, then
        # multi-row SQL and its parameters for each chunk, which cost more than SQLite's own work.
        self._insert_new_posts(new)
        # A stored post only gets here when its current version changed; the update trigger re-indexes it.
        self.db.conn.executemany(_UPDATE_POST, [(*row[1:], row[0]) for row in changed])
        self.db.conn.executemany(
            _INSERT_VERSION,
            [
                (post.key, number, post.version_id, post.text, record_text(post.raw), fetched_at)
                for post, number in plan.versions
            ],
        )
        return plan.new_posts, plan.numbers

    def _insert_new_posts(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert posts never stored before and add them to the full-text index, one statement for all."""
        if not rows:
            return
        # posts has no AUTOINCREMENT: each new row gets the highest rowid so far plus one (SQLite picks
        # another only once rowid 2**63-1 is taken), so the rows inserted here are exactly those above it.
        newest = self.db.execute("SELECT coalesce(max(rowid), 0) FROM posts").fetchone()[0]
        self.db.conn.executemany(_INSERT_POST, rows)
        # Schema 8 dropped the per-row insert trigger: indexing the batch at once is 3-4x faster.
        self.db.execute(_INDEX_NEW_POSTS, [newest])

    def _histories(self, keys: list[str]) -> dict[str, History]:
        """What the database knows of these posts' versions (posts never stored are left out)."""
        histories: dict[str, History] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for key, version, text in self.db.execute(
                f"SELECT key, version, text FROM posts WHERE key IN ({marks})", chunk
            ).fetchall():
                histories[key] = History(version, {text: version}, in_versions=False, stored=True)
            for key, version, text in self.db.execute(
                f"SELECT post_key, version, text FROM post_versions WHERE post_key IN ({marks})", chunk
            ).fetchall():
                histories[key].texts[text] = version
                histories[key].in_versions = True
        return histories

    def _save_hits(
        self, hits: Sequence[Found], versions: dict[tuple[str, str], int], now: datetime
    ) -> list[tuple[int, Hit, dict]]:
        """Store each rule's first hit on a post, against the version it matched; return the new ones."""
        if not hits:
            return []
        known = self._hit_ids(sorted({hit.post_key for _, hit, _ in hits}))
        fresh: dict[tuple[str, str], tuple[Hit, dict | None, int]] = {}
        for post, hit, payload in hits:
            if (hit.post_key, hit.rule_id) not in known:
                fresh.setdefault((hit.post_key, hit.rule_id), (hit, payload, versions[(post.key, post.text)]))
        self.db["hits"].insert_all(
            (hit_row(hit, now, version) for hit, _, version in fresh.values()), batch_size=_CHUNK
        )
        ids = self._hit_ids(sorted({key for key, _ in fresh}))
        return [(ids[key], hit, payload) for key, (hit, payload, _) in fresh.items()]

    def _quarantine(
        self, source: str, feed: str, rejected: Sequence[Rejected], now: datetime
    ) -> tuple[str, ...]:
        """Keep the records a source could not use, once each; return the errors of those not kept before."""
        first_time = []
        for item in rejected:
            record = record_text(item.record)
            digest = hashlib.sha256(record.encode()).hexdigest()
            error = _escape_surrogates(item.error)[:1000]
            added = self.db.execute(
                "INSERT OR IGNORE INTO quarantine (source, feed, digest, record, error, first_seen) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [source, feed, digest, record, error, iso(now)],
            ).rowcount
            if added:
                first_time.append(error)
        return tuple(first_time)

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


POST_COLUMNS = (
    "key platform id version_id author author_id text url created_at lang kind reply_to quote_of mentions "
    "conversation_id source fetched_at raw version"
).split()
_INSERT_POST = f"INSERT INTO posts ({', '.join(POST_COLUMNS)}) VALUES ({', '.join('?' * len(POST_COLUMNS))})"
_UPDATE_POST = f"UPDATE posts SET {', '.join(f'{c} = ?' for c in POST_COLUMNS[1:])} WHERE key = ?"
_INDEX_NEW_POSTS = (
    "INSERT INTO posts_fts (rowid, text, author) SELECT rowid, text, author FROM posts WHERE rowid > ?"
)
_INSERT_VERSION = (
    "INSERT INTO post_versions (post_key, version, version_id, text, raw, first_seen) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def post_values(post: Post, source: str, fetched_at: str, version: int) -> tuple[Any, ...]:
    """A posts row: the values of `POST_COLUMNS`, in that order."""
    return (
        post.key,
        post.platform,
        post.id,
        post.version_id,
        post.author,
        post.author_id,
        post.text,
        post.url,
        iso(post.created_at),
        post.lang,
        post.kind,
        post.reply_to,
        post.quote_of,
        json.dumps(list(post.mentions)) if post.mentions else "[]",  # most posts mention nobody
        post.conversation_id,
        source,
        fetched_at,
        record_text(post.raw),
        version,
    )


def record_text(record: Any) -> str:
    """A record as text SQLite can always store: JSON (a line of text as it is), any lone surrogate written as
    its JSON escape (`\\ud800`), which UTF-8 cannot encode but JSON reads back as the same character."""
    if isinstance(record, str):
        return _escape_surrogates(record)
    return _escape_surrogates(_RECORD_ENCODER.encode(record))


# Made once: json.dumps with these options builds a new encoder at every call, for every post stored.
_RECORD_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogates(text: str) -> str:
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def hit_row(hit: Hit, now: datetime, version: int = 1) -> dict[str, Any]:
    return {
        "post_key": hit.post_key,
        "version": version,
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


def _to_all(channels: Sequence[str]) -> ChannelsFor:
    """The route of a caller that names its channels: every payload goes to all of them."""
    names = list(channels)
    return lambda payload: names
