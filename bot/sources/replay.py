"""Replay: posts from a JSONL file, handed out as if they were arriving live, with time compressed.

Used by the demo, for backfills and in tests. Each line is one JSON object with at least `platform`, `id`,
`author`, `text` (possibly empty) and `created_at`; optional: author_id, url, lang, kind, reply_to, quote_of,
mentions (a list of usernames), conversation_id. A broken line is logged with its number, skipped and
quarantined; the rest of the file is used.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.models import KINDS, Fetch, Post, Rejected
from bot.sources import post_or_rejected
from bot.timeutil import iso, parse_datetime
from config import SourceConfig

log = logging.getLogger("ringside.replay")


class ReplaySource:
    platform = "replay"

    def __init__(
        self,
        name: str,
        path: Path,
        replay_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.path = path
        self.rejected: list[Rejected] = []  # broken lines, handed out with every fetch for the quarantine
        self.posts = sorted(read_posts(path, self.rejected), key=_position)
        self.replay_seconds = replay_seconds
        self.clock = clock
        self._anchor: tuple[float, datetime] | None = None

    @classmethod
    def from_config(cls, config: SourceConfig, paced: bool = True) -> ReplaySource:
        return cls(config.name, config.options["path"], config.options["replay_seconds"] if paced else 0.0)

    def feeds(self) -> list[str]:
        return [self.path.name]

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        """Posts after `cursor` whose time has come on the replay clock; the new cursor is the last one."""
        after = _parse_cursor(cursor)
        now = self._replay_now(after)
        ready = [p for p in self.posts if (after is None or _position(p) > after) and p.created_at <= now]
        new_cursor = _format_cursor(_position(ready[-1])) if ready else cursor
        if ready and ready[-1] is self.posts[-1] and self.replay_seconds > 0:
            log.info(
                "replay %s: all %d posts replayed; the service keeps polling (Ctrl-C stops). "
                "Ask the database: run_bot.py report latest-hits, report exchanges, search 'cage'",
                self.name,
                len(self.posts),
            )
        return Fetch(posts=tuple(ready), cursor=new_cursor, read=len(ready), rejected=tuple(self.rejected))

    def remaining(self, cursor: str | None) -> int:
        after = _parse_cursor(cursor)
        return sum(1 for p in self.posts if after is None or _position(p) > after)

    def _replay_now(self, after: tuple[str, str] | None) -> datetime:
        """The moment the replay has reached: the whole file at once unless paced.

        The clock starts at the first fetch, from the saved cursor if there is one, so a restarted
        service goes on where it stopped instead of waiting through what it already stored.
        """
        if not self.posts or self.replay_seconds <= 0:
            return datetime.max.replace(tzinfo=UTC)
        first, last = self.posts[0].created_at, self.posts[-1].created_at
        if self._anchor is None:
            start = parse_datetime(after[0]) if after else first
            self._anchor = (self.clock(), start)
        started, start = self._anchor
        speed = max((last - first).total_seconds(), 1.0) / self.replay_seconds
        return start + timedelta(seconds=(self.clock() - started) * speed)


def _position(post: Post) -> tuple[str, str]:
    return (iso(post.created_at), post.key)


def _format_cursor(position: tuple[str, str]) -> str:
    return f"{position[0]}|{position[1]}"


def _parse_cursor(cursor: str | None) -> tuple[str, str] | None:
    if not cursor:
        return None
    moment, _, key = cursor.partition("|")
    return (moment, key)


def read_posts(path: Path, rejected: list[Rejected] | None = None) -> list[Post]:
    """Every good post in a JSONL file; each bad line is logged with its number, skipped, and added to
    `rejected` (the line as it is, for the quarantine) when given."""
    posts = []
    # utf-8-sig: a file saved with a byte-order mark (Windows Notepad does) keeps its first line.
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                post = post_or_rejected(json.loads(line), post_from_record)
            except ValueError as error:  # not JSON at all
                post = Rejected(line.rstrip("\n"), str(error))
            if isinstance(post, Rejected):
                log.warning("%s:%d: skipped: %s", path, number, post.error)
                if rejected is not None:
                    rejected.append(Rejected(line.rstrip("\n"), f"line {number}: {post.error}"))
                continue
            posts.append(post)
    return posts


_REQUIRED = ("platform", "id", "author", "text", "created_at")


def post_from_record(record: Any) -> Post:
    """A Post from one replay record. Raises ValueError naming the field that is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    # An empty text is a post with no words (a picture, a bare repost); only an absent text is missing.
    missing = [f for f in _REQUIRED if record.get(f) is None or (f != "text" and record[f] == "")]
    if missing:
        raise ValueError(f"missing field {missing[0]!r}")
    if not isinstance(record["text"], str):
        raise ValueError("field 'text' must be a string")
    try:
        created_at = parse_datetime(str(record["created_at"]))
    except ValueError:
        raise ValueError(f"field 'created_at' is not an ISO-8601 time: {record['created_at']!r}") from None
    kind = record.get("kind", "post")
    if kind not in KINDS:
        raise ValueError(f"field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    if ":" in str(record["platform"]):
        # x:1 with id 2 and x with id 1:2 would share the key x:1:2; stored keys split at the first colon.
        raise ValueError(
            f"field 'platform' must not contain ':' (a post key is platform:id), got {record['platform']!r}"
        )
    return Post(
        platform=str(record["platform"]).lower(),
        id=str(record["id"]),
        author=str(record["author"]).lstrip("@"),
        text=record["text"],
        created_at=created_at,
        author_id=_text_or_none(record.get("author_id")),
        url=_text_or_none(record.get("url")),
        lang=_text_or_none(record.get("lang")),
        kind=kind,
        reply_to=_text_or_none(record.get("reply_to")),
        quote_of=_text_or_none(record.get("quote_of")),
        mentions=_mentions(record.get("mentions")),
        conversation_id=_text_or_none(record.get("conversation_id")),
        raw=record,
    )


def _mentions(value: Any) -> tuple[str, ...]:
    """The usernames of a `mentions` list, without their "@". Raises ValueError for anything else: a string
    alone would otherwise be read as one mention per character."""
    if value in (None, ""):
        return ()
    if not isinstance(value, list):
        raise ValueError(f"field 'mentions' must be a list of usernames, got {_shown(value)}")
    for name in value:
        if not isinstance(name, str) or not name.lstrip("@"):
            raise ValueError(f"field 'mentions' must be a list of usernames, got {_shown(name)} in the list")
    return tuple(name.lstrip("@") for name in value)


def _shown(value: Any) -> str:
    """A JSON value as the file has it, cut short for a one-line message."""
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= 40 else shown[:39] + "…"


def _text_or_none(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
