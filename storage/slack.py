"""The Slack app channel's records, mixed into Store: each alert's message, each exchange's thread, and what
people did with an alert's buttons."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import sqlite_utils

from bot.timeutil import iso, utcnow
from storage.outbox import _COLUMNS, Alert, _alert

ACTIONS = ("not_a_challenge", "mute_rule", "acknowledge")


@dataclass(frozen=True)
class SlackMessage:
    """Where an alert's message is in Slack."""

    alert_id: int
    channel_id: str
    ts: str
    thread_ts: str | None = None


@dataclass(frozen=True)
class SlackThread:
    """An exchange's thread in one configured channel: its parent message and the alerts it shows."""

    channel: str
    exchange_id: str
    parent_alert_id: int
    latest_alert_id: int
    channel_id: str
    ts: str


@dataclass(frozen=True)
class AlertAction:
    action: str
    user_id: str
    user_name: str | None
    at: str


class SlackStore:
    """Reads take the store's lock too: Bolt's threads read here while a poll or a delivery may be in the
    middle of a transaction on the same connection."""

    db: sqlite_utils.Database
    lock: threading.RLock

    def slack_message(self, alert_id: int) -> SlackMessage | None:
        """The message posted for the alert, or None when none was recorded."""
        with self.lock:
            row = self.db.execute(
                "SELECT alert_id, channel_id, ts, thread_ts FROM slack_messages WHERE alert_id = ?",
                [alert_id],
            ).fetchone()
        return SlackMessage(*row) if row else None

    def alert_at(self, channel_id: str, ts: str) -> Alert | None:
        """The alert whose message is at `ts` in the Slack conversation `channel_id`, or None."""
        with self.lock:
            row = self.db.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE id = "
                "(SELECT alert_id FROM slack_messages WHERE channel_id = ? AND ts = ?)",
                [channel_id, ts],
            ).fetchone()
        return _alert(row) if row else None

    def save_slack_message(self, message: SlackMessage, thread: tuple[str, str] | None = None) -> None:
        """Record where the alert's message is; with `thread` (channel, exchange id), that it is the parent
        of the exchange's thread in that channel. One transaction: both or neither."""
        with self.lock, self.db.atomic():
            self.db.execute(
                "INSERT OR REPLACE INTO slack_messages (alert_id, channel_id, ts, thread_ts, posted_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [message.alert_id, message.channel_id, message.ts, message.thread_ts, iso(utcnow())],
            )
            if thread is not None:
                self.db.execute(
                    "INSERT OR IGNORE INTO slack_threads "
                    "(channel, exchange_id, parent_alert_id, latest_alert_id, channel_id, ts) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [*thread, message.alert_id, message.alert_id, message.channel_id, message.ts],
                )

    def slack_thread(self, channel: str, exchange_id: str) -> SlackThread | None:
        """The exchange's thread in the configured channel, or None before its first alert was posted."""
        with self.lock:
            row = self.db.execute(
                "SELECT channel, exchange_id, parent_alert_id, latest_alert_id, channel_id, ts "
                "FROM slack_threads WHERE channel = ? AND exchange_id = ?",
                [channel, exchange_id],
            ).fetchone()
        return SlackThread(*row) if row else None

    def thread_opened_by(self, alert_id: int) -> SlackThread | None:
        """The thread whose parent message is this alert's, if any."""
        with self.lock:
            row = self.db.execute(
                "SELECT channel, exchange_id, parent_alert_id, latest_alert_id, channel_id, ts "
                "FROM slack_threads WHERE parent_alert_id = ?",
                [alert_id],
            ).fetchone()
        return SlackThread(*row) if row else None

    def set_thread_latest(self, channel: str, exchange_id: str, alert_id: int) -> None:
        """The parent now shows the exchange as of this alert (never an older one: turns arrive in order,
        but a retried alert must not move the parent back)."""
        with self.lock, self.db.atomic():
            self.db.execute(
                "UPDATE slack_threads SET latest_alert_id = max(latest_alert_id, ?) "
                "WHERE channel = ? AND exchange_id = ?",
                [alert_id, channel, exchange_id],
            )

    def alert_by_id(self, alert_id: int) -> Alert | None:
        with self.lock:
            row = self.db.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", [alert_id]).fetchone()
        return _alert(row) if row else None

    def record_action(self, alert_id: int, action: str, user_id: str, user_name: str | None) -> bool:
        """Record that someone pressed one of the alert's buttons; False when that was done before (the
        first press is the one kept)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        with self.lock, self.db.atomic():
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO alert_actions (alert_id, action, user_id, user_name, at) "
                "VALUES (?, ?, ?, ?, ?)",
                [alert_id, action, user_id, user_name, iso(utcnow())],
            )
            return cursor.rowcount == 1

    def alert_actions(self, alert_id: int) -> list[AlertAction]:
        """What was done with the alert's buttons, in the order it was done."""
        with self.lock:
            rows = self.db.execute(
                "SELECT action, user_id, user_name, at FROM alert_actions WHERE alert_id = ? "
                "ORDER BY at, rowid",
                [alert_id],
            ).fetchall()
        return [AlertAction(*row) for row in rows]
