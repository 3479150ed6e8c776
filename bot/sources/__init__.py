"""Sources: one file per platform, each behind the same small interface, found by type in SOURCES.

A source lists its feeds (an account, a batch of accounts, a replay file) and fetches one feed from a cursor.
It never touches the database: the pipeline stores what it returns and the new cursor in one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from bot.models import Fetch, Post, Rejected
from bot.timeutil import iso, utcnow
from config import SourceConfig

# Earlier is a placeholder (year 1 is Go's zero time) rather than a post; later than a day ahead is a broken
# clock. Dates near the calendar's ends also overflow the arithmetic of exchange windows and replays.
EARLIEST_POST = datetime(1970, 1, 1, tzinfo=UTC)
CLOCK_SLACK = timedelta(days=1)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class SourceError(Exception):
    """One poll of one feed failed. Its cursor stays where it was; other feeds go on."""


# The longest a platform's word can pause a feed: a reset years away (or in milliseconds, read as seconds) is
# a platform's or a proxy's mistake, and a feed paused until 2100 would look healthy and read nothing.
LONGEST_PAUSE = timedelta(hours=24)


class RateLimited(SourceError):
    """The platform said to wait: no poll of this feed before `reset_at` (at most LONGEST_PAUSE away).

    `whole_source`: the limit is the app's or the token's, not the feed's (Meta's app and business limits), so
    every feed of the source waits, rather than each calling until it is refused in turn."""

    def __init__(self, message: str, reset_at: datetime, whole_source: bool = False) -> None:
        super().__init__(message)
        self.reset_at = min(reset_at, utcnow() + LONGEST_PAUSE)
        self.whole_source = whole_source


def reset_from_epoch(value: Any, otherwise: timedelta) -> datetime:
    """The moment a rate-limit header gives in Unix seconds, within LONGEST_PAUSE from now; `otherwise` from
    now when the value is absent, past or nonsense (not a number, infinite, in milliseconds)."""
    now = utcnow()
    try:
        moment = datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return now + otherwise
    if moment <= now:
        return now + otherwise
    return min(moment, now + LONGEST_PAUSE)


class Source(Protocol):
    name: str
    platform: str

    def feeds(self) -> list[str]:
        """The feeds to poll, each with a cursor and a scheduled job of its own."""
        ...

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        """New posts of `feed` after `cursor`, and the cursor to start from next time."""
        ...


def build_source(
    config: SourceConfig, known_accounts: dict[str, str], paced: bool = True, data_dir: Path | None = None
) -> Source:
    """The source `config` describes. `known_accounts` maps usernames to ids already resolved and stored.

    `paced` False makes a replay hand out its whole file at once (for `once` and backfills). `data_dir` (the
    database's directory) holds files a source keeps of its own, such as a refreshed Threads token.
    """
    from bot.sources import instagram, mastodon, replay, rss, threads, x

    builders: dict[str, Callable[..., Source]] = {
        "replay": lambda: replay.ReplaySource.from_config(config, paced=paced),
        "x": lambda: x.XSource.from_config(config, known_accounts),
        "mastodon": lambda: mastodon.MastodonSource.from_config(config, known_accounts),
        "rss": lambda: rss.RssSource.from_config(config),
        "threads": lambda: threads.ThreadsSource.from_config(config, data_dir or Path(".")),
        "instagram": lambda: instagram.InstagramSource.from_config(config),
        "bluesky": lambda: _bluesky(config, known_accounts),
    }
    return builders[config.type]()


def _bluesky(config: SourceConfig, known_accounts: dict[str, str]) -> Source:
    # Imported only when a Bluesky source is configured: the atproto SDK takes most of a second to load.
    from bot.sources import bluesky

    return bluesky.BlueskySource.from_config(config, known_accounts)


def sanitised(record: Any) -> Any:
    """`record` (as decoded from JSON) with every lone surrogate, in any key or string at any depth, replaced
    by U+FFFD. JSON can carry one ("\\ud800") but UTF-8 cannot encode it: SQLite and channels would refuse
    the record on every poll. A replacement keeps the text's length, so offsets into it stay right."""
    if isinstance(record, str):
        return _LONE_SURROGATE.sub("\ufffd", record)
    if isinstance(record, dict):
        return {sanitised(key): sanitised(value) for key, value in record.items()}
    if isinstance(record, list):
        return [sanitised(value) for value in record]
    return record


def checked(post: Post) -> Post:
    """`post` if its time is one a post can have; ValueError naming the field otherwise."""
    if not EARLIEST_POST <= post.created_at <= utcnow() + CLOCK_SLACK:
        raise ValueError(
            f"field 'created_at' is {iso(post.created_at)}: before 1970 or in the future, not a post's time"
        )
    return post


def posts_in_time_order(
    records: Iterable[Any], convert: Callable[[Any], Post], keep_newest: int | None = None
) -> tuple[tuple[Post, ...], tuple[Rejected, ...]]:
    """Each record made a Post (see post_or_rejected; the last of one key wins), oldest first, and the records
    rejected. `keep_newest`: at most that many of the newest (a first poll takes no history)."""
    posts: dict[str, Post] = {}
    rejected: list[Rejected] = []
    for record in records:
        post = post_or_rejected(record, convert)
        if isinstance(post, Rejected):
            rejected.append(post)
        else:
            posts[post.key] = post
    ordered = sorted(posts.values(), key=lambda p: p.created_at)
    if keep_newest is not None:
        ordered = ordered[-keep_newest:]
    return tuple(ordered), tuple(rejected)


def post_or_rejected(record: Any, convert: Callable[[Any], Post]) -> Post | Rejected:
    """The Post `convert` makes of the sanitised `record`, or the record as received, rejected with the
    reason, so that one bad record goes to the quarantine instead of stopping its feed."""
    try:
        return checked(convert(sanitised(record)))
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, AttributeError) as error:
        reason = f"missing field {error}" if isinstance(error, KeyError) else str(error)
        return Rejected(record, reason or type(error).__name__)
