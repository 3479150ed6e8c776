"""The operator's verdicts on stored posts, mixed into Store: `run_bot.py label` writes, `train` reads."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

import sqlite_utils

from bot.timeutil import iso, utcnow


class LabelError(Exception):
    """A verdict that cannot be stored: an unknown post or alert."""


@dataclass(frozen=True)
class Verdict:
    post_key: str
    label: str
    category: str | None
    text: str
    lang: str | None
    labelled_at: str
    source: str
    author: str = ""  # from the stored post, when it is still there (rules scoped by account need it)
    kind: str = "post"


class LabelStore:
    db: sqlite_utils.Database
    lock: threading.RLock

    def post_of_alert(self, alert_id: int) -> tuple[str, int]:
        """The post an alert is about and the version its hit matched (the text the operator was shown);
        LabelError when there is no such alert or it is not about a post."""
        with self.lock:  # the Slack app's buttons ask from a thread of their own
            row = self.db.execute(
                "SELECT h.post_key, h.version FROM alerts a JOIN hits h ON h.id = a.hit_id WHERE a.id = ?",
                [alert_id],
            ).fetchone()
        if row is None:
            raise LabelError(f"no alert {alert_id} about a post (see: run_bot.py report alerts)")
        return str(row[0]), int(row[1])

    def save_label(
        self,
        post_key: str,
        label: str,
        category: str | None = None,
        source: str = "cli",
        now: datetime | None = None,
        version: int | None = None,
    ) -> Verdict:
        """Store the operator's verdict on a stored post, replacing an earlier one for the same post.

        The verdict is on the post's current text, or on the text of `version` (an alert's) when given."""
        with self.lock:
            row = self.db.execute(
                "SELECT coalesce(v.text, p.text), p.lang FROM posts p "
                "LEFT JOIN post_versions v ON v.post_key = p.key AND v.version = ? WHERE p.key = ?",
                [version, post_key],
            ).fetchone()
            if row is None:
                raise LabelError(f"no stored post {post_key!r} (keys look like x:1671234567890)")
            verdict = Verdict(post_key, label, category, row[0], row[1], iso(now or utcnow()), source)
            row = {k: v for k, v in verdict.__dict__.items() if k not in ("author", "kind")}
            with self.db.conn:
                self.db["labels"].upsert(row, pk="post_key")
            return verdict

    def verdicts(self) -> list[Verdict]:
        """Every stored verdict, oldest first."""
        rows = self.db.execute(
            "SELECT l.post_key, l.label, l.category, l.text, l.lang, l.labelled_at, l.source,"
            " coalesce(p.author, ''), coalesce(p.kind, 'post')"
            " FROM labels l LEFT JOIN posts p ON p.key = l.post_key ORDER BY l.labelled_at"
        ).fetchall()
        return [Verdict(*row) for row in rows]
