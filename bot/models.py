"""The small, frozen values that move through the pipeline: Post -> Hit -> alert row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

KINDS = ("post", "reply", "quote", "repost")


@dataclass(frozen=True)
class Post:
    """One public post, as any source sees it. `key` is unique across platforms."""

    platform: str
    id: str
    author: str
    text: str
    created_at: datetime
    author_id: str | None = None
    url: str | None = None
    lang: str | None = None
    kind: str = "post"
    reply_to: str | None = None
    quote_of: str | None = None
    mentions: tuple[str, ...] = ()
    conversation_id: str | None = None
    # The id of the newest version when a platform lets people edit (X's edit history); `id` stays the first.
    version_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.id}"


@dataclass(frozen=True)
class Span:
    """Half-open [start, end) offsets into the post's original text, and the rule term that matched there."""

    start: int
    end: int
    term: str


@dataclass(frozen=True)
class Hit:
    """A rule that matched a post, with where it matched."""

    post_key: str
    rule_id: str
    category: str
    severity: int
    spans: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Fetch:
    """What one poll of one feed returned.

    `cursor` is where the next poll starts; it is saved in the same transaction as `posts`.
    `read` counts the posts the platform returned (X bills per post read), duplicates included.
    `accounts` holds (platform, username, user id) learned during this poll, to be kept in the database.
    """

    posts: tuple[Post, ...]
    cursor: str | None
    read: int = 0
    accounts: tuple[tuple[str, str, str], ...] = ()
