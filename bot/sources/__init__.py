"""Sources: one file per platform, each behind the same small interface, found by type in SOURCES.

A source lists its feeds (an account, a batch of accounts, a replay file) and fetches one feed from a cursor.
It never touches the database: the pipeline stores what it returns and the new cursor in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from bot.models import Fetch
from config import SourceConfig


class SourceError(Exception):
    """One poll of one feed failed. Its cursor stays where it was; other feeds go on."""


class RateLimited(SourceError):
    """The platform said to wait: no poll of this feed before `reset_at`."""

    def __init__(self, message: str, reset_at: datetime) -> None:
        super().__init__(message)
        self.reset_at = reset_at


class Source(Protocol):
    name: str
    platform: str

    def feeds(self) -> list[str]:
        """The feeds to poll, each with a cursor and a scheduled job of its own."""
        ...

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        """New posts of `feed` after `cursor`, and the cursor to start from next time."""
        ...


def build_source(config: SourceConfig, known_accounts: dict[str, str], paced: bool = True) -> Source:
    """The source `config` describes. `known_accounts` maps usernames to ids already resolved and stored.

    `paced` False makes a replay hand out its whole file at once (for `once` and backfills).
    """
    from bot.sources import replay, x

    builders: dict[str, Callable[..., Source]] = {
        "replay": lambda: replay.ReplaySource.from_config(config, paced=paced),
        "x": lambda: x.XSource.from_config(config, known_accounts),
    }
    return builders[config.type]()
