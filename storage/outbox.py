"""The outbox: alerts waiting for their channel, and what decides whether a hit makes one (throttle, mutes).

Statuses: pending (to send, maybe waiting for a retry, or held while its channel is paused); sent (the
channel accepted it); dead (refused for good, or failed too often or too long: `alerts retry-dead` requeues
it); muted (stored while a mute was on).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

from bot.models import Hit, parse_account
from bot.timeutil import iso, parse_datetime, utcnow

# The next attempt of a paused channel's alerts: never, until `alerts resume` makes them due. A moment
# rather than a status or a column, so a paused alert is an ordinary pending one, held in its place.
PAUSED = datetime(9999, 12, 31, tzinfo=UTC)
# How a permanent refusal reads in last_error (bot.notifiers.http.check writes "... refused (HTTP 404 ...)").
REFUSED = "refused ("
REFUSAL_STREAK_LIMIT = 100  # a streak is only ever compared with a handful
# The channels an alert payload goes to (bot.routing decides; the store only asks).
ChannelsFor = Callable[[dict[str, Any]], Sequence[str]]
_COLUMNS = "id, channel, key, payload, attempts, next_attempt_at, created_at, folded, digest_key"


def notice_rows(
    channels: Sequence[str], payload: dict[str, Any], rule_id: str | None = None, status: str = "pending"
) -> list[dict[str, Any]]:
    """The outbox rows of a message that is not a single hit, one per channel, due now."""
    now = iso(utcnow())
    return [
        {
            "channel": channel,
            "key": payload["key"],
            "hit_id": None,
            "rule_id": rule_id,
            "author": None,
            "payload": json.dumps(payload, ensure_ascii=False),
            "status": status,
            "attempts": 0,
            "folded": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for channel in channels
    ]


@dataclass(frozen=True)
class Alert:
    id: int
    channel: str
    key: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    folded: int = 0
    digest_key: str | None = None


def _alert(row: Sequence[Any]) -> Alert:
    return Alert(
        row[0],
        row[1],
        row[2],
        json.loads(row[3]),
        row[4],
        parse_datetime(row[5]),
        parse_datetime(row[6]),
        row[7],
        row[8],
    )


class Outbox:
    """Outbox queries, mixed into Store (which provides `db` and `lock`)."""

    db: sqlite_utils.Database
    lock: threading.RLock

    def _queue_alerts(
        self,
        new_hits: list[tuple[int, Hit, dict[str, Any] | None]],
        authors: dict[str, str],
        route: ChannelsFor,
        now: datetime,
        throttle: float,
    ) -> int:
        """Queue an alert per new hit and channel that `route` names for it, folding throttled ones, marking
        muted ones; count rows."""
        muted_rules, muted_authors = self._active_mutes(now)
        rows: list[dict[str, Any]] = []
        queued: dict[tuple[str, str, str], dict[str, Any]] = {}  # (channel, rule, author) -> row made now
        stored: dict[tuple[str, str, str], int | None] = {}  # ... -> an alert within the window, if any
        folds: Counter[int] = Counter()
        for hit_id, hit, payload in new_hits:
            if payload is None:
                continue
            author = authors.get(hit.post_key, "")
            platform = hit.post_key.partition(":")[0]
            muted = hit.rule_id in muted_rules or not muted_authors.isdisjoint(
                {author, f"{platform}:{author}"}
            )
            for channel in route(payload):
                group = (channel, hit.rule_id, author)
                if throttle > 0 and not muted:
                    if group in queued:
                        queued[group]["folded"] += 1
                        continue
                    if group not in stored:
                        stored[group] = self._recent_alert(group, now - timedelta(seconds=throttle))
                    if stored[group] is not None:
                        folds[stored[group]] += 1
                        continue
                row = _alert_row(channel, hit_id, hit, author, payload, "muted" if muted else "pending", now)
                rows.append(row)
                queued[group] = row
        # ignore: an alert already queued under the same key for a channel is never queued twice.
        self.db["alerts"].insert_all(rows, ignore=True, batch_size=500)
        for alert_id, extra in folds.items():
            self.db.execute("UPDATE alerts SET folded = folded + ? WHERE id = ?", [extra, alert_id])
        return len(rows)

    def _recent_alert(self, group: tuple[str, str, str], since: datetime) -> int | None:
        row = self.db.execute(
            "SELECT id FROM alerts WHERE channel = ? AND rule_id = ? AND author = ? AND created_at >= ? "
            "AND status IN ('pending', 'sent') ORDER BY id LIMIT 1",
            [*group, iso(since)],
        ).fetchone()
        return row[0] if row else None

    # -- delivery --------------------------------------------------------------------------------------

    def pending_alerts(self, channel: str, limit: int = 100) -> list[Alert]:
        """The channel's pending alerts in creation order (delivery order), due or not."""
        with self.lock:
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE channel = ? AND status = 'pending' ORDER BY id LIMIT ?",
                [channel, limit],
            ).fetchall()
        return [_alert(row) for row in rows]

    def due_count(self, channel: str) -> int:
        """How many of the channel's pending alerts are due now (the most one delivery can send)."""
        with self.lock:
            return self.db.execute(
                "SELECT count(*) FROM alerts "
                "WHERE channel = ? AND status = 'pending' AND next_attempt_at <= ?",
                [channel, iso(utcnow())],
            ).fetchone()[0]

    def claim_digest(self, channel: str, limit: int) -> list[Alert]:
        """The alerts of the channel's next digest message, all carrying one digest key.

        The group is fixed at its first attempt, so a retried or restarted digest is the same message
        under the same key, even if more alerts arrived meanwhile.
        """
        with self.lock, self.db.atomic():
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE channel = ? AND status = 'pending' "
                "AND digest_key = (SELECT digest_key FROM alerts WHERE channel = ? AND status = 'pending' "
                "AND digest_key IS NOT NULL ORDER BY id LIMIT 1) ORDER BY id",
                [channel, channel],
            ).fetchall()
            if rows:
                return [_alert(row) for row in rows]
            alerts = [a for a in self.pending_alerts(channel, limit) if "kind" not in a.payload]
            if not alerts:
                return []
            key = digest_key(a.key for a in alerts)
            self.db.execute(
                f"UPDATE alerts SET digest_key = ? WHERE id IN ({','.join('?' * len(alerts))})",
                [key, *(a.id for a in alerts)],
            )
            return [_alert_with_digest(a, key) for a in alerts]

    def begin_attempt(self, alert_ids: Sequence[int], retry_at: datetime) -> None:
        """Count an attempt, and hold the alerts back until `retry_at`, in a transaction of its own committed
        before the send: if recording the outcome then fails, the alert is sent again only after this
        backoff, and at most as many times as attempts are allowed."""
        with self.lock, self.db.atomic():
            self.db.execute(
                "UPDATE alerts SET attempts = attempts + 1, next_attempt_at = ? "
                f"WHERE id IN ({','.join('?' * len(alert_ids))})",
                [iso(retry_at), *alert_ids],
            )

    def mark_sent(self, *alert_ids: int) -> None:
        """The channel accepted the alerts (the attempt itself was counted by begin_attempt)."""
        with self.lock, self.db.atomic():
            self.db.execute(
                "UPDATE alerts SET status = 'sent', sent_at = ?, last_error = NULL "
                f"WHERE id IN ({','.join('?' * len(alert_ids))})",
                [iso(utcnow()), *alert_ids],
            )

    def mark_failed(self, alert_ids: int | Sequence[int], error: str, retry_at: datetime | None) -> None:
        """Record why an attempt failed (begin_attempt counted it): retry at `retry_at`, or give up (status
        dead) when it is None."""
        ids = [alert_ids] if isinstance(alert_ids, int) else list(alert_ids)
        with self.lock, self.db.atomic():
            self.db.execute(
                "UPDATE alerts SET last_error = ?, status = ?, next_attempt_at = ? "
                f"WHERE id IN ({','.join('?' * len(ids))})",
                [error[:1000], "pending" if retry_at else "dead", iso(retry_at or utcnow()), *ids],
            )

    def retry_dead(self, channel: str | None = None) -> int:
        """Requeue dead alerts (of one channel, or all) for a fresh round of attempts; returns how many."""
        with self.lock, self.db.atomic():
            cursor = self.db.execute(
                "UPDATE alerts SET status = 'pending', attempts = 0, next_attempt_at = ?, digest_key = NULL "
                "WHERE status = 'dead' AND (? IS NULL OR channel = ?)",
                [iso(utcnow()), channel, channel],
            )
            return cursor.rowcount

    def refused_in_a_row(self, channel: str) -> list[int]:
        """The channel's newest dead alerts that it refused for good, back to the last one it accepted or
        the first that died for another reason (alerts go out in id order, so this is their order too)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT id, last_error FROM alerts WHERE channel = ? AND status IN ('dead', 'sent') "
                "AND id > coalesce((SELECT max(id) FROM alerts WHERE channel = ? AND status = 'sent'), 0) "
                "ORDER BY id DESC LIMIT ?",
                [channel, channel, REFUSAL_STREAK_LIMIT],
            ).fetchall()
        streak = []
        for alert_id, error in rows:
            if REFUSED not in (error or ""):
                break
            streak.append(alert_id)
        return streak[::-1]

    def pause_channel(self, channel: str, reason: str, refused_ids: Sequence[int]) -> int:
        """Hold every pending alert of the channel until resume_channel, the refused ones (`refused_ids`)
        requeued rather than dead, with `reason` as their last error; returns how many are kept."""
        with self.lock, self.db.atomic():
            self.db.execute(
                f"UPDATE alerts SET status = 'pending' WHERE status = 'dead' "
                f"AND id IN ({','.join('?' * len(refused_ids))})",
                list(refused_ids),
            )
            cursor = self.db.execute(
                "UPDATE alerts SET next_attempt_at = ?, last_error = ? "
                "WHERE channel = ? AND status = 'pending'",
                [iso(PAUSED), reason[:1000], channel],
            )
            return cursor.rowcount

    def resume_channel(self, channel: str | None = None) -> int:
        """Make the alerts of a paused channel (or of every one) due now; returns how many."""
        with self.lock, self.db.atomic():
            cursor = self.db.execute(
                "UPDATE alerts SET next_attempt_at = ? WHERE status = 'pending' AND next_attempt_at >= ? "
                "AND (? IS NULL OR channel = ?)",
                [iso(utcnow()), iso(PAUSED), channel, channel],
            )
            return cursor.rowcount

    def paused_channels(self) -> dict[str, str]:
        """The paused channels, each with why it was paused."""
        with self.lock:
            rows = self.db.execute(
                "SELECT channel, last_error FROM alerts WHERE id IN (SELECT min(id) FROM alerts "
                "WHERE status = 'pending' AND next_attempt_at >= ? GROUP BY channel) ORDER BY channel",
                [iso(PAUSED)],
            ).fetchall()
        return {channel: reason or "" for channel, reason in rows}

    def queue_notice(self, channels: Sequence[str], payload: dict[str, Any]) -> int:
        """Queue a message that is not a single hit (a watchdog notice, an exchange turn) to every channel,
        once per key."""
        rows = notice_rows(channels, payload)
        with self.lock, self.db.atomic():
            self.db["alerts"].insert_all(rows, ignore=True)
        return len(rows)

    def outbox_summary(self) -> list[tuple[str, str, int, str | None]]:
        """(channel, status, alerts, the latest error among them) for every channel and status."""
        with self.lock:
            return self.db.execute(
                "SELECT channel, status, count(*), (SELECT last_error FROM alerts b "
                "WHERE b.channel = a.channel AND b.status = a.status ORDER BY id DESC LIMIT 1) "
                "FROM alerts a GROUP BY channel, status ORDER BY 1, 2"
            ).fetchall()

    def backlog(self, channel: str) -> tuple[int, int, bool]:
        """The channel's pending and dead alerts, counted on the (channel, status) index alone, and whether
        the channel is paused (it refused every alert; its alerts are held until `alerts resume`)."""
        with self.lock:
            counts = dict(
                self.db.execute(
                    "SELECT status, count(*) FROM alerts WHERE channel = ? AND status IN ('pending', 'dead') "
                    "GROUP BY status",
                    [channel],
                ).fetchall()
            )
            (paused,) = self.db.execute(
                "SELECT EXISTS (SELECT 1 FROM alerts WHERE channel = ? AND status = 'pending' "
                "AND next_attempt_at >= ?)",
                [channel, iso(PAUSED)],
            ).fetchone()
        return counts.get("pending", 0), counts.get("dead", 0), bool(paused)

    def alert_counts(self) -> dict[str, int]:
        with self.lock:
            return dict(self.db.execute("SELECT status, count(*) FROM alerts GROUP BY status").fetchall())

    # -- mutes -----------------------------------------------------------------------------------------

    def mute(self, until: datetime, rule_id: str | None = None, author: str | None = None) -> None:
        """Mute a rule, or an author: "elonmusk" on every platform, "x:elonmusk" on one (the forms rules take;
        ValueError for others)."""
        if (rule_id is None) == (author is None):
            raise ValueError("mute takes a rule or an author")
        with self.lock, self.db.atomic():
            self.db["mutes"].insert(
                {
                    "rule_id": rule_id,
                    "author": _muted_name(author) if author else None,
                    "until": iso(until),
                    "created_at": iso(utcnow()),
                }
            )

    def unmute(self, rule_id: str | None = None, author: str | None = None) -> int:
        """End the mutes of a rule, or every mute that silences the author (on its platform, or on all of them
        when no platform is named); returns how many were active."""
        now = iso(utcnow())
        with self.lock, self.db.atomic():
            active = self.db.execute(
                "SELECT id, rule_id, author FROM mutes WHERE until > ?", [now]
            ).fetchall()
            ended = [i for i, rule, name in active if (rule_id and rule == rule_id) or _covers(name, author)]
            if ended:
                marks = ",".join("?" * len(ended))
                self.db.execute(f"UPDATE mutes SET until = ? WHERE id IN ({marks})", [now, *ended])
            return len(ended)

    def mutes(self) -> list[tuple[str, str, datetime]]:
        """Active mutes as (kind, name, until)."""
        with self.lock:
            rows = self.db.execute(
                "SELECT rule_id, author, max(until) FROM mutes WHERE until > ? GROUP BY rule_id, author "
                "ORDER BY 3",
                [iso(utcnow())],
            ).fetchall()
        return [("rule", r, parse_datetime(u)) if r else ("author", a, parse_datetime(u)) for r, a, u in rows]

    def _active_mutes(self, now: datetime) -> tuple[set[str], set[str]]:
        rows = self.db.execute("SELECT rule_id, author FROM mutes WHERE until > ?", [iso(now)]).fetchall()
        return {r for r, _ in rows if r}, {a for _, a in rows if a}


def _muted_name(author: str) -> str:
    """How a muted author is stored: "elonmusk" (every platform) or "x:elonmusk"."""
    platform, handle = parse_account(author)
    return f"{platform}:{handle}" if platform else handle


def _covers(muted: str | None, author: str | None) -> bool:
    """Whether a stored author mute and an account named to unmute are about the same account."""
    if not muted or not author:
        return False
    (muted_platform, muted_handle), (platform, handle) = parse_account(muted), parse_account(author)
    return muted_handle == handle and (None in (muted_platform, platform) or muted_platform == platform)


def _alert_row(
    channel: str, hit_id: int, hit: Hit, author: str, payload: dict[str, Any], status: str, now: datetime
) -> dict[str, Any]:
    return {
        "channel": channel,
        "key": payload["key"],
        "hit_id": hit_id,
        "rule_id": hit.rule_id,
        "author": author,
        "payload": json.dumps(payload, ensure_ascii=False),
        "status": status,
        "attempts": 0,
        "folded": 0,
        "next_attempt_at": iso(now),
        "created_at": iso(now),
    }


def digest_key(keys: Sequence[str] | Any) -> str:
    digest = hashlib.sha256("\x00".join(sorted(keys)).encode()).hexdigest()
    return f"rs1d-{digest[:32]}"


def _alert_with_digest(alert: Alert, key: str) -> Alert:
    return Alert(
        alert.id,
        alert.channel,
        alert.key,
        alert.payload,
        alert.attempts,
        alert.next_attempt_at,
        alert.created_at,
        alert.folded,
        key,
    )
