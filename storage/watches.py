"""Watch queries, mixed into Store: the SQL behind bot.watches (frequency, spike and silence rules).

Accounts are "platform:handle" in lower case, as [[people]] writes them; each is looked up on the
posts_account_created index (platform, lower(author), created_at), so a query reads the posts of its window
and accounts, not the whole table (bench/watches.py measures it on a million posts).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlite_utils

from bot.timeutil import iso, parse_datetime
from storage.exchanges import _POST, StoredPost, _post
from storage.outbox import ChannelsFor, notice_rows

_IN_JSON = "IN (SELECT value FROM json_each(?))"  # in a list of values bound as one JSON array


@dataclass(frozen=True)
class WatchState:
    firing_since: datetime | None
    alerts: int  # alerts made in the current episode
    last_alert_at: datetime | None


@dataclass(frozen=True)
class FeedEvidence:
    """What the polls of an account's feed say: whether its newest poll failed, and when a poll last
    succeeded (None: never)."""

    failing: bool
    last_success: datetime | None


def _split(accounts: Sequence[str]) -> list[tuple[str, str]]:
    return [
        (platform, handle) for platform, _, handle in (a.lower().partition(":") for a in sorted(accounts))
    ]


class WatchStore:
    db: sqlite_utils.Database
    lock: threading.RLock

    def posts_addressing(
        self, authors: Sequence[str], addressed: Sequence[str], since: datetime, until: datetime
    ) -> list[StoredPost]:
        """Posts by `authors` in [since, until) that mention one of the `addressed` accounts, or reply to or
        quote a stored post of theirs; oldest first."""
        addressed_list = json.dumps(sorted(addressed))
        found: list[StoredPost] = []
        with self.lock:
            for platform, handle in _split(authors):
                rows = self.db.execute(
                    f"""
                    SELECT {_POST} FROM posts p
                    WHERE p.platform = ? AND lower(p.author) = ? AND p.created_at >= ? AND p.created_at < ?
                      AND (EXISTS (SELECT 1 FROM json_each(p.mentions) m
                                   WHERE lower(p.platform || ':' || m.value) {_IN_JSON})
                        OR EXISTS (SELECT 1 FROM posts q
                                   WHERE q.platform = p.platform AND q.id IN (p.reply_to, p.quote_of)
                                     AND lower(q.platform || ':' || q.author) {_IN_JSON}))
                    """,
                    [platform, handle, iso(since), iso(until), addressed_list, addressed_list],
                ).fetchall()
                found += [_post(row) for row in rows]
        return sorted(found, key=lambda post: (post.created_at, post.key))

    def posts_in_category(self, category: str, since: datetime, until: datetime) -> int:
        """How many posts made in [since, until) have a hit of `category` (a post counts once, whatever
        number of rules it matched)."""
        with self.lock:
            return self.db.execute(
                "SELECT count(*) FROM posts p WHERE p.created_at >= ? AND p.created_at < ? "
                "AND EXISTS (SELECT 1 FROM hits h WHERE h.post_key = p.key AND h.category = ?)",
                [iso(since), iso(until), category],
            ).fetchone()[0]

    def latest_posts_in_category(self, category: str, since: datetime, until: datetime, limit: int) -> list:
        """The newest posts of [since, until) with a hit of `category`, newest first."""
        with self.lock:
            rows = self.db.execute(
                f"SELECT {_POST} FROM posts p WHERE p.created_at >= ? AND p.created_at < ? "
                "AND EXISTS (SELECT 1 FROM hits h WHERE h.post_key = p.key AND h.category = ?) "
                "ORDER BY p.created_at DESC LIMIT ?",
                [iso(since), iso(until), category, limit],
            ).fetchall()
        return [_post(row) for row in rows]

    def first_post_at(self) -> datetime | None:
        """When the oldest stored post was made (on the posts_created_key index)."""
        with self.lock:
            row = self.db.execute("SELECT min(created_at) FROM posts").fetchone()
        return parse_datetime(row[0]) if row[0] else None

    def last_post_at(self, account: str) -> datetime | None:
        """When the account's newest stored post was made; None if none is stored."""
        ((platform, handle),) = _split([account])
        with self.lock:
            row = self.db.execute(
                "SELECT max(created_at) FROM posts WHERE platform = ? AND lower(author) = ?",
                [platform, handle],
            ).fetchone()
        return parse_datetime(row[0]) if row[0] else None

    def feed_evidence(self, account: str, sources: Collection[str] | None = None) -> FeedEvidence | None:
        """What the polls say of the feed that brings the account's posts: the source of its newest post,
        and of that source the feed named after the handle (X, Bluesky, Mastodon, Threads and Instagram
        name their feeds so), else every feed of the source, any of whose newest polls failing counts as
        failing. Only posts of `sources` count (None: of any source). None when the account has no such
        stored post or its source was never polled."""
        ((platform, handle),) = _split([account])
        among = "" if sources is None else f"AND source {_IN_JSON} "
        with self.lock:
            row = self.db.execute(
                f"SELECT source FROM posts WHERE platform = ? AND lower(author) = ? {among}"
                "ORDER BY created_at DESC LIMIT 1",
                [platform, handle] + ([] if sources is None else [json.dumps(sorted(sources))]),
            ).fetchone()
            if row is None:
                return None
            # The feeds a source polls are its rows in cursors: a few, where runs has one row per poll.
            feeds = [f for (f,) in self.db.execute("SELECT feed FROM cursors WHERE source = ?", [row[0]])]
            own = [feed for feed in feeds if feed.lower().lstrip("@") == handle]
            # The look-ups /healthz makes (ReportStore.feed_health): indexed, however many polls a feed had.
            polls = [self.feed_health(row[0], feed) for feed in own or feeds]
        polls = [poll for poll in polls if poll["last_poll"] is not None]  # never polled: no evidence
        if not polls:
            return None
        successes = [parse_datetime(poll["last_success"]) for poll in polls if poll["last_success"]]
        return FeedEvidence(
            failing=any(poll["last_error"] is not None for poll in polls),
            last_success=max(successes) if successes else None,
        )

    # -- state ---------------------------------------------------------------------------------------

    def watch_state(self, name: str) -> WatchState:
        with self.lock:
            row = self.db.execute(
                "SELECT firing_since, alerts, last_alert_at FROM watch_state WHERE name = ?", [name]
            ).fetchone()
        if row is None:
            return WatchState(None, 0, None)
        return WatchState(
            parse_datetime(row[0]) if row[0] else None, row[1], parse_datetime(row[2]) if row[2] else None
        )

    def record_watch(
        self,
        name: str,
        state: WatchState,
        checked_at: datetime,
        channels: ChannelsFor,
        payload: dict[str, Any] | None,
    ) -> int:
        """Save the watch's new state and, in the same transaction, queue `payload` (if any) to the channels
        `channels(payload)` names (routing): an alert is made exactly when its state says so, even across a
        crash. Returns the rows queued."""
        with self.lock, self.db.atomic():
            self.db["watch_state"].upsert(
                {
                    "name": name,
                    "firing_since": iso(state.firing_since) if state.firing_since else None,
                    "alerts": state.alerts,
                    "checked_at": iso(checked_at),
                }
                | ({"last_alert_at": iso(checked_at), "last_key": payload["key"]} if payload else {}),
                pk="name",
            )
            return self.queue_watch_alert(channels(payload), payload, checked_at) if payload else 0

    def queue_watch_alert(self, channels: Sequence[str], payload: dict[str, Any], at: datetime) -> int:
        """A watch alert per channel, carrying its rule (the watch's name) like a hit's alert does; kept as
        `muted`, not sent, while its rule is muted at `at` (`mute --rule`, the Slack app's button)."""
        rule = payload["rule"]["id"]
        muted = rule in self._active_mutes(at)[0]
        rows = notice_rows(channels, payload, rule_id=rule, status="muted" if muted else "pending")
        self.db["alerts"].insert_all(rows, ignore=True)
        return len(rows)
