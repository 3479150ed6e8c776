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
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.models import KINDS, Fetch, Post, Rejected
from bot.sources import post_or_rejected
from bot.timeutil import iso, parse_datetime
from config import SourceConfig

log = logging.getLogger("ringside.replay")


DEFAULT_BATCH = 2000  # posts a fetch hands out at most: one transaction, a few MB of memory


class ReplaySource:
    """Unpaced (`replay_seconds` 0: `once`, backfills) the file is read as a stream in file order, at most
    `batch` posts a fetch, and the cursor is the byte offset reached: memory stays flat whatever the size.
    Paced (the demo) the whole file is read into memory and sorted by time, since the compressed clock needs
    time order; each fetch still hands out at most `batch` posts."""

    platform = "replay"

    def __init__(
        self,
        name: str,
        path: Path,
        replay_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self.name = name
        self.path = path
        self.replay_seconds = replay_seconds
        self.clock = clock
        self.batch = batch
        # Paced only: the broken lines (handed out with every fetch, for the quarantine) and the posts, each
        # with the byte offset just past its line, in time order.
        self.rejected: list[Rejected] = []
        self.posts: list[tuple[Post, int]] = []
        if replay_seconds > 0:
            chunk = read_records(path, 0, 0, None, self.rejected)
            self.posts = sorted(chunk.posts, key=lambda item: _position(item[0]))
        self._anchor: tuple[float, datetime] | None = None

    @classmethod
    def from_config(cls, config: SourceConfig, paced: bool = True) -> ReplaySource:
        replay_seconds = config.options["replay_seconds"] if paced else 0.0
        batch = config.options.get("batch_size", DEFAULT_BATCH)
        return cls(config.name, config.options["path"], replay_seconds, batch=batch)

    @property
    def paced(self) -> bool:
        return self.replay_seconds > 0

    def feeds(self) -> list[str]:
        return [self.path.name]

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        """At most `batch` posts after `cursor`; `more` is True when others are ready now."""
        return self._fetch_paced(cursor) if self.paced else self._fetch_stream(cursor)

    def _fetch_stream(self, cursor: str | None) -> Fetch:
        """The next `batch` records in file order from the cursor's byte offset, each batch's posts put in
        time order; the new cursor is the offset just past the last line read. A time cursor (left by a
        paced run) still counts: the file is read from its start, skipping the posts at or before it."""
        offset, line, after = _parse_cursor(cursor)
        if offset and not _still_the_file_read(self.path, cursor or ""):
            # Replaced or rewritten: read it again from the start; what is stored already adds nothing.
            log.warning(
                "replay %s: %s changed since the saved cursor; reading it again", self.name, self.path
            )
            offset, line = 0, 0
        rejected: list[Rejected] = []
        chunk = read_records(self.path, offset, line, self.batch, rejected)
        posts = sorted((p for p, _ in chunk.posts if after is None or _position(p) > after), key=_position)
        more = chunk.records == self.batch and chunk.offset < self.path.stat().st_size
        new_cursor = _format_offset(self.path, chunk.offset, chunk.line) if chunk.offset > offset else cursor
        return Fetch(
            posts=tuple(posts), cursor=new_cursor, read=len(posts), rejected=tuple(rejected), more=more
        )

    def _fetch_paced(self, cursor: str | None) -> Fetch:
        """Posts after `cursor` whose time has come on the replay clock, at most `batch` of them."""
        offset, _, after = _parse_cursor(cursor)
        if offset and not _still_the_file_read(self.path, cursor or ""):
            offset = 0
        # An offset cursor (left by `once`): the posts whose line lies before it are stored.
        todo = [post for post, end in self.posts if end > offset]
        now = self._replay_now(after, todo)
        ready = [p for p in todo if (after is None or _position(p) > after) and p.created_at <= now]
        more = len(ready) > self.batch
        ready = ready[: self.batch]
        new_cursor = _format_position(_position(ready[-1])) if ready else cursor
        if ready and ready[-1] is todo[-1]:
            log.info(
                "replay %s: all %d posts replayed; the service keeps polling (Ctrl-C stops). "
                "Ask the database: run_bot.py report latest-hits, report exchanges, search 'cage'",
                self.name,
                len(self.posts),
            )
        rejected = tuple(self.rejected)
        return Fetch(posts=tuple(ready), cursor=new_cursor, read=len(ready), rejected=rejected, more=more)

    def standing(self, cursor: str | None) -> str:
        """One line saying how much of the file is left after `cursor`, for the log at start."""
        offset, _, after = _parse_cursor(cursor)
        if self.paced:
            left = sum(1 for p, end in self.posts if end > offset and (after is None or _position(p) > after))
            if left == 0 and self.posts:
                return (
                    f"all {len(self.posts)} posts are already stored; delete the database to watch it again"
                )
            return f"{left} of {len(self.posts)} posts to go"
        if after is not None:
            return f"stored up to the post of {after[0]}; the file is read from its start to find the rest"
        size = self.path.stat().st_size
        if offset >= size:
            return "the whole file is already stored; delete the database to read it again"
        return f"{max(size - offset, 0):,} of {size:,} bytes to go"

    def bytes_done(self, cursor: str | None) -> int:
        """How far into the file `cursor` is, in bytes (0 for a time cursor): for a progress line."""
        return _parse_cursor(cursor)[0]

    def _replay_now(self, after: tuple[str, str] | None, todo: list[Post]) -> datetime:
        """The moment the replay has reached.

        The clock starts at the first fetch, from the saved cursor if there is one, so a restarted
        service goes on where it stopped instead of waiting through what it already stored.
        """
        if not todo:
            return datetime.max.replace(tzinfo=UTC)
        first, last = self.posts[0][0].created_at, self.posts[-1][0].created_at
        if self._anchor is None:
            start = parse_datetime(after[0]) if after else todo[0].created_at
            self._anchor = (self.clock(), start)
        started, start = self._anchor
        speed = max((last - first).total_seconds(), 1.0) / self.replay_seconds
        return start + timedelta(seconds=(self.clock() - started) * speed)


def _position(post: Post) -> tuple[str, str]:
    return (iso(post.created_at), post.key)


def _format_position(position: tuple[str, str]) -> str:
    return f"{position[0]}|{position[1]}"


def _format_offset(path: Path, offset: int, line: int) -> str:
    return f"@{offset}:{line}:{_tail_check(path, offset)}"


def _tail_check(path: Path, offset: int) -> str:
    """A checksum of the bytes just before `offset`: tells whether the file is still the one the cursor read
    (a file rewritten with other posts of the same length keeps its size and inode)."""
    with path.open("rb") as handle:
        handle.seek(max(offset - _TAIL, 0))
        return f"{zlib.crc32(handle.read(min(offset, _TAIL))):08x}"


def _still_the_file_read(path: Path, cursor: str) -> bool:
    """False when the file is shorter than the cursor's offset or its bytes before the offset changed."""
    offset, _, _ = _parse_cursor(cursor)
    if offset > path.stat().st_size:
        return False
    check = cursor.split(":")[2] if cursor.count(":") >= 2 else None
    return check is None or check == _tail_check(path, offset)


_TAIL = 256  # bytes before a cursor's offset whose checksum the cursor keeps


def _parse_cursor(cursor: str | None) -> tuple[int, int, tuple[str, str] | None]:
    """(byte offset, line number, time position) of a cursor: `@offset:line:check` from a stream, `time|key`
    from a paced replay (offset 0: the file is read from its start, skipping what is at or before it)."""
    if not cursor:
        return 0, 0, None
    if cursor.startswith("@"):
        offset, _, rest = cursor[1:].partition(":")
        return int(offset), int(rest.partition(":")[0] or 0), None
    moment, _, key = cursor.partition("|")
    return 0, 0, (moment, key)


def read_posts(path: Path, rejected: list[Rejected] | None = None) -> list[Post]:
    """Every good post in a JSONL file; each bad line is logged with its number, skipped, and added to
    `rejected` (the line as it is, for the quarantine) when given."""
    return [post for post, _ in read_records(path, 0, 0, None, rejected).posts]


@dataclass
class Chunk:
    """Records read from a replay file: the good posts, each with the byte offset just past its line, and
    where reading stopped (the offset and number of the last line read, good or bad)."""

    posts: list[tuple[Post, int]]
    offset: int
    line: int
    records: int  # lines read that held something, good or bad


def read_records(
    path: Path, offset: int, line: int, limit: int | None, rejected: list[Rejected] | None = None
) -> Chunk:
    """At most `limit` records (None: all) from byte `offset` on, `line` being the number of the line before
    it. Each bad line is logged with its number, skipped, and added to `rejected` when given."""
    chunk = Chunk([], offset, line, 0)
    with path.open("rb") as handle:
        handle.seek(offset)
        while limit is None or chunk.records < limit:
            raw = handle.readline()
            if not raw:
                break
            chunk.offset += len(raw)
            chunk.line += 1
            # A file saved with a byte-order mark (Windows Notepad does) keeps its first line.
            text = raw.decode("utf-8", errors="replace").removeprefix("\ufeff" if chunk.line == 1 else "")
            if not text.strip():
                continue
            chunk.records += 1
            post = _post_or_rejected(text)
            if isinstance(post, Rejected):
                log.warning("%s:%d: skipped: %s", path, chunk.line, post.error)
                if rejected is not None:
                    rejected.append(Rejected(text.rstrip("\r\n"), f"line {chunk.line}: {post.error}"))
                continue
            chunk.posts.append((post, chunk.offset))
    return chunk


def _post_or_rejected(line: str) -> Post | Rejected:
    try:
        return post_or_rejected(json.loads(line), post_from_record)
    except ValueError as error:  # not JSON at all
        return Rejected(line.rstrip("\r\n"), str(error))


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
