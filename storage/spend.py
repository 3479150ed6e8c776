"""The X spend ledger's SQL, mixed into Store: which posts X returned on which UTC day, and how many each feed
was billed for. See bot.spend for what is counted and the budgets."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import date, datetime, timedelta

import sqlite_utils

from bot.timeutil import iso


class SpendStore:
    db: sqlite_utils.Database
    lock: threading.RLock

    def _record_x_reads(self, source: str, feed: str, moment: datetime, post_ids: Sequence[str]) -> int:
        """Count the posts X returned at `moment` (inside the caller's transaction: the poll's), each once per
        UTC day whichever feed read it first; return how many are billed for the first time that day.

        Per-post rows of days before yesterday are dropped: a poll that started before midnight and is saved
        after it still finds yesterday's ids."""
        day = utc_day(moment)
        before = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
        self.db.execute("DELETE FROM x_reads WHERE day < ?", [before])
        billed = self.db.conn.executemany(
            "INSERT OR IGNORE INTO x_reads (day, post_id) VALUES (?, ?)", [(day, i) for i in post_ids]
        ).rowcount
        if billed:
            self.db.execute(
                "INSERT INTO x_read_totals (day, source, feed, posts) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (day, source, feed) DO UPDATE SET posts = posts + excluded.posts",
                [day, source, feed, billed],
            )
        return billed

    def x_posts_billed(self, first_day: str, last_day: str) -> int:
        """Posts billed from `first_day` to `last_day` (UTC dates, YYYY-MM-DD, both included), all feeds."""
        with self.lock:
            return self.db.execute(
                "SELECT coalesce(sum(posts), 0) FROM x_read_totals WHERE day BETWEEN ? AND ?",
                [first_day, last_day],
            ).fetchone()[0]


def utc_day(moment: datetime) -> str:
    """The UTC date of `moment`, as the ledger keeps it: YYYY-MM-DD."""
    return iso(moment)[:10]
