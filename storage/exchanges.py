"""Exchange queries, mixed into Store: the SQL behind bot.exchanges. Called inside a poll's transaction."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlite_utils

from bot.models import Post
from bot.timeutil import iso, parse_datetime

_POST = "p.key, p.platform, p.id, p.author, p.created_at, p.url, p.kind, p.lang, p.text"


@dataclass(frozen=True)
class StoredPost:
    key: str
    platform: str
    id: str
    author: str
    created_at: datetime
    url: str | None
    kind: str
    lang: str | None
    text: str


def _post(row: Sequence[Any]) -> StoredPost:
    return StoredPost(row[0], row[1], row[2], row[3], parse_datetime(row[4]), *row[5:9])


class ExchangeStore:
    db: sqlite_utils.Database
    lock: threading.RLock

    def post_by_id(self, platform: str, post_id: str) -> StoredPost | None:
        row = self.db.execute(
            f"SELECT {_POST} FROM posts p WHERE p.platform = ? AND p.id = ?", [platform, post_id]
        ).fetchone()
        return _post(row) if row else None

    def latest_trigger(
        self, accounts: Sequence[str], since: datetime, until: datetime, silent: Sequence[str]
    ) -> StoredPost | None:
        """The newest post by these "platform:handle" accounts, posted in [since, until), that is a hit of a
        category other than `silent` or a turn of an exchange."""
        if not accounts:
            return None
        marks = ",".join("?" * len(accounts))
        silent_marks = ",".join("?" * len(silent)) or "''"
        row = self.db.execute(
            f"""
            SELECT {_POST} FROM posts p
            WHERE lower(p.platform || ':' || p.author) IN ({marks}) AND p.created_at >= ? AND p.created_at < ?
              AND (EXISTS (SELECT 1 FROM hits h
                           WHERE h.post_key = p.key AND h.category NOT IN ({silent_marks}))
                   OR EXISTS (SELECT 1 FROM exchange_turns t WHERE t.post_key = p.key))
            ORDER BY p.created_at DESC LIMIT 1
            """,
            [*accounts, iso(since), iso(until), *silent],
        ).fetchone()
        return _post(row) if row else None

    def unlinked_posts(
        self, accounts: Sequence[str], after: datetime, until: datetime
    ) -> list[tuple[Post, set[str]]]:
        """Posts by these accounts in (after, until] that are no exchange turn yet, with hit categories."""
        if not accounts:
            return []
        marks = ",".join("?" * len(accounts))
        rows = self.db.execute(
            f"""
            SELECT p.platform, p.id, p.author, p.text, p.created_at, p.kind, p.reply_to, p.quote_of,
                   p.mentions, (SELECT json_group_array(h.category) FROM hits h WHERE h.post_key = p.key)
            FROM posts p
            WHERE lower(p.platform || ':' || p.author) IN ({marks}) AND p.created_at > ? AND p.created_at <= ?
              AND NOT EXISTS (SELECT 1 FROM exchange_turns t WHERE t.post_key = p.key)
            ORDER BY p.created_at
            """,
            [*accounts, iso(after), iso(until)],
        ).fetchall()
        return [
            (
                Post(
                    platform=r[0],
                    id=r[1],
                    author=r[2],
                    text=r[3],
                    created_at=parse_datetime(r[4]),
                    kind=r[5],
                    reply_to=r[6],
                    quote_of=r[7],
                    mentions=tuple(json.loads(r[8])),
                ),
                set(json.loads(r[9])),
            )
            for r in rows
        ]

    def severity_of(self, post_key: str) -> int:
        """The highest severity of the post's hits (3 when it has none)."""
        row = self.db.execute("SELECT max(severity) FROM hits WHERE post_key = ?", [post_key]).fetchone()
        return int(row[0] or 3)

    def is_trigger(self, post_key: str, silent: Sequence[str]) -> bool:
        marks = ",".join("?" * len(silent)) or "''"
        return bool(
            self.db.execute(
                f"SELECT EXISTS (SELECT 1 FROM hits WHERE post_key = ? AND category NOT IN ({marks})) "
                "OR EXISTS (SELECT 1 FROM exchange_turns WHERE post_key = ?)",
                [post_key, *silent, post_key],
            ).fetchone()[0]
        )

    def exchange_of(self, post_key: str) -> str | None:
        row = self.db.execute(
            "SELECT exchange_id FROM exchange_turns WHERE post_key = ? ORDER BY exchange_id LIMIT 1",
            [post_key],
        ).fetchone()
        return row[0] if row else None

    def start_exchange(
        self, exchange_id: str, people: list[str], severity: int, first: StoredPost, person: str
    ) -> None:
        self.db["exchanges"].insert(
            {
                "id": exchange_id,
                "people": json.dumps(sorted(people)),
                "status": "open",
                "severity": severity,
                "turns": 1,
                "started_at": iso(first.created_at),
                "updated_at": iso(first.created_at),
            },
            ignore=True,
        )
        self.db["exchange_turns"].insert(
            {"exchange_id": exchange_id, "turn": 1, "post_key": first.key, "person": person, "link": "first"},
            ignore=True,
        )

    def add_turn(self, exchange_id: str, post_key: str, posted_at: datetime, person: str, link: str) -> int:
        """Append a turn (once per post) and return its number; 0 if the post was already a turn."""
        if self.db.execute(
            "SELECT 1 FROM exchange_turns WHERE exchange_id = ? AND post_key = ?", [exchange_id, post_key]
        ).fetchone():
            return 0
        turn, people = self.db.execute(
            "SELECT turns + 1, people FROM exchanges WHERE id = ?", [exchange_id]
        ).fetchone()
        self.db["exchange_turns"].insert(
            {"exchange_id": exchange_id, "turn": turn, "post_key": post_key, "person": person, "link": link}
        )
        self.db.execute(
            "UPDATE exchanges SET turns = ?, severity = min(5, severity + 1), "
            "updated_at = max(updated_at, ?), people = ?, "
            "status = CASE WHEN ? >= 3 THEN 'escalating' ELSE 'open' END WHERE id = ?",
            [turn, iso(posted_at), json.dumps(sorted({*json.loads(people), person})), turn, exchange_id],
        )
        return turn

    def exchange(self, exchange_id: str) -> dict[str, Any]:
        """An exchange with its turns in order, each with its post and spans (for the alert)."""
        row = self.db.execute(
            "SELECT id, people, status, severity, turns, started_at, updated_at FROM exchanges WHERE id = ?",
            [exchange_id],
        ).fetchone()
        turns = self.db.execute(
            f"""
            SELECT t.turn, t.person, t.link, {_POST},
                   (SELECT json_group_array(json(h.spans)) FROM hits h
                    WHERE h.post_key = p.key AND h.version = p.version)
            FROM exchange_turns t JOIN posts p ON p.key = t.post_key
            WHERE t.exchange_id = ? ORDER BY t.turn
            """,
            [exchange_id],
        ).fetchall()
        return {
            "id": row[0],
            "people": json.loads(row[1]),
            "status": row[2],
            "severity": row[3],
            "turns": row[4],
            "started_at": row[5],
            "updated_at": row[6],
            "posts": [
                {
                    "turn": t[0],
                    "person": t[1],
                    "link": t[2],
                    "post": vars(_post(t[3:12])) | {"created_at": t[7]},
                    "spans": [s for group in json.loads(t[12]) for s in group],
                }
                for t in turns
            ],
        }

    def answers(self) -> dict[str, str]:
        """Post key -> how it links, for every post that answers an exchange (a turn after the first)."""
        rows = self.db.execute(
            "SELECT post_key, min(link) FROM exchange_turns WHERE turn >= 2 GROUP BY post_key"
        )
        return dict(rows.fetchall())

    def cool_exchanges(self, before: datetime) -> int:
        """Mark exchanges with no turn since `before` as cooled; returns how many changed."""
        return self.db.execute(
            "UPDATE exchanges SET status = 'cooled' WHERE status != 'cooled' AND updated_at < ?",
            [iso(before)],
        ).rowcount
