"""The stored posts read back in batches, for rule previews (`rules try`, `rules diff`), mixed into Store.

A preview may read millions of posts beside the running service, so posts come a batch at a time, each batch
from its own short query (keyset pagination on created_at, then rowid): memory stays at one batch, and no
read transaction is held open across the whole scan (a long one keeps the writer's WAL from checkpointing).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlite_utils

from bot.models import MODEL_RULE, Post, parse_account
from bot.timeutil import iso, parse_datetime

_COLUMNS = (
    "p.rowid, p.key, p.platform, p.id, p.author, p.text, p.created_at, p.author_id, p.url, p.lang, p.kind, "
    "p.reply_to, p.quote_of, p.mentions, p.conversation_id, p.version_id"
)  # not p.version: added by a migration, it sits after the raw JSON, which is read to reach it
_CHUNK = 500  # keys per IN (...): under SQLite's oldest limit of bound parameters


@dataclass(frozen=True)
class StoredText:
    """One stored text of a post: `post` carries this version's text; `current` when it is the posts row."""

    post: Post
    version: int
    current: bool


@dataclass(frozen=True)
class StoredHit:
    """A rule's hit as stored: the version of the post it matched and its spans over that version's text."""

    rule_id: str
    version: int
    spans: tuple[tuple[int, int, str], ...]


class HistoryStore:
    db: sqlite_utils.Database
    lock: threading.RLock

    def post_batches(
        self,
        since: datetime | None = None,
        accounts: Sequence[str] = (),
        newest_first: bool = True,
        batch_size: int = 1000,
        every_version: bool = False,
    ) -> Iterator[list[StoredText]]:
        """The stored posts posted since `since` by any of `accounts` ("elonmusk", "@elonmusk",
        "x:elonmusk"; all accounts when empty), ordered by when they were posted, newest (or oldest) first, in
        batches of `batch_size` posts. Each post's current text comes first; with `every_version` its earlier
        texts (post_versions) follow it in the same batch. ValueError for an account in no known form."""
        conditions, params = self._post_filters(since, accounts)
        direction, compare = ("DESC", "<") if newest_first else ("ASC", ">")
        after: tuple[str, int] | None = None
        while True:
            page = list(conditions)
            page_params = list(params)
            if after is not None:
                page.append(f"(p.created_at, p.rowid) {compare} (?, ?)")
                page_params.extend(after)
            sql = (
                f"SELECT {_COLUMNS} FROM posts p WHERE {' AND '.join(page) or '1 = 1'} "
                f"ORDER BY p.created_at {direction}, p.rowid {direction} LIMIT ?"
            )
            with self.lock:
                rows = self.db.execute(sql, [*page_params, batch_size]).fetchall()
            if not rows:
                return
            after = (rows[-1][6], rows[-1][0])
            yield self._texts([_post(row) for row in rows], every_version)
            if len(rows) < batch_size:
                return

    def stored_rule_hits(self, post_keys: Sequence[str]) -> dict[str, list[StoredHit]]:
        """Post key -> the rules' hits stored for it (the learned model's hits left out)."""
        found: dict[str, list[StoredHit]] = {}
        for start in range(0, len(post_keys), _CHUNK):
            chunk = list(post_keys[start : start + _CHUNK])
            sql = (
                "SELECT post_key, rule_id, version, spans FROM hits "
                f"WHERE post_key IN ({','.join('?' * len(chunk))}) AND rule_id != ? ORDER BY id"
            )
            with self.lock:
                rows = self.db.execute(sql, [*chunk, MODEL_RULE]).fetchall()
            for key, rule_id, version, spans in rows:
                stored = StoredHit(rule_id, version, tuple(tuple(span) for span in json.loads(spans)))
                found.setdefault(key, []).append(stored)
        return found

    def hit_rule_ids(self) -> set[str]:
        """The id of every rule with a hit anywhere in the database (the learned model's left out)."""
        with self.lock:
            rows = self.db.execute("SELECT DISTINCT rule_id FROM hits WHERE rule_id != ?", [MODEL_RULE])
            return {row[0] for row in rows.fetchall()}

    @staticmethod
    def _post_filters(since: datetime | None, accounts: Sequence[str]) -> tuple[list[str], list[Any]]:
        """SQL conditions on `posts p` and their parameters; never text from the user in the SQL itself."""
        conditions: list[str] = []
        params: list[Any] = []
        if since is not None:
            conditions.append("p.created_at >= ?")
            params.append(iso(since))
        if accounts:
            either = []
            for account in accounts:
                platform, handle = parse_account(account)
                either.append("(lower(p.author) = ? AND (? IS NULL OR p.platform = ?))")
                params.extend([handle, platform, platform])
            conditions.append(f"({' OR '.join(either)})")
        return conditions, params

    def _texts(self, posts: list[Post], every_version: bool) -> list[StoredText]:
        """Each post's current text with its version number, and with `every_version` its other texts after
        it. A post never edited has no post_versions rows, and is version 1."""
        history = self._version_history([post.key for post in posts])
        texts = []
        for post in posts:
            current, versions = history.get(post.key, (1, []))
            texts.append(StoredText(post, current, True))
            if every_version:
                texts.extend(
                    StoredText(replace(post, text=text), number, False)
                    for number, text in versions
                    if number != current
                )
        return texts

    def _version_history(self, keys: list[str]) -> dict[str, tuple[int, list[tuple[int, str]]]]:
        """Post key -> (its current version, every (version, text) it had), for the posts ever edited."""
        history: dict[str, tuple[int, list[tuple[int, str]]]] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            sql = (
                "SELECT v.post_key, p.version, v.version, v.text FROM post_versions v "
                f"JOIN posts p ON p.key = v.post_key WHERE v.post_key IN ({','.join('?' * len(chunk))}) "
                "ORDER BY v.post_key, v.version"
            )
            with self.lock:
                for key, current, version, text in self.db.execute(sql, chunk).fetchall():
                    history.setdefault(key, (current, []))[1].append((version, text))
        return history


def _post(row: Sequence[Any]) -> Post:
    """A Post from a row of _COLUMNS (its raw JSON is not read: a preview never needs it)."""
    return Post(
        platform=row[2],
        id=row[3],
        author=row[4],
        text=row[5],
        created_at=parse_datetime(row[6]),
        author_id=row[7],
        url=row[8],
        lang=row[9],
        kind=row[10],
        reply_to=row[11],
        quote_of=row[12],
        mentions=tuple(json.loads(row[13])) if row[13] and row[13] != "[]" else (),
        conversation_id=row[14],
        version_id=row[15],
    )
