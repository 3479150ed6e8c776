"""The small, frozen values that move through the pipeline: Post -> Hit -> alert row."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

KINDS = ("post", "reply", "quote", "repost")
MODEL_RULE = "model"  # the rule id of a hit decided by the learned scorer rather than by a rule


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


def parse_account(text: str) -> tuple[str | None, str]:
    """An account as rules, people and the command line write it: "elonmusk", "@ElonMusk" or "x:elonmusk",
    as (platform or None, handle), lower case, without @. A platform name holds no ':' (the first colon
    splits).

    Raises ValueError when the handle (or a platform before a colon) is empty."""
    platform, colon, handle = text.strip().lower().partition(":")
    if not colon:
        platform, handle = "", platform
    handle = handle.strip().lstrip("@")
    if not handle or (colon and not platform.strip()):
        raise ValueError(f"{text!r}: expected an account such as elonmusk, @elonmusk or x:elonmusk")
    return platform.strip() or None, handle


@dataclass(frozen=True)
class Span:
    """Half-open [start, end) offsets into the post's original text, and the rule term that matched there."""

    start: int
    end: int
    term: str


def span_rows(spans: tuple[Span, ...]) -> list[list[int | str]]:
    """Spans as JSON-ready [start, end, term] rows: how hits, alerts and backtests write them."""
    return [[s.start, s.end, s.term] for s in spans]


@dataclass(frozen=True)
class Hit:
    """A decision that a post alerts (or, for silent categories, is kept): what decided it and why.

    `rule_id` is the rule that matched, or MODEL_RULE when the learned scorer decided alone. `spans` are where
    the rule matched (the explanation, for the model); `probability` is the scorer's P(flag) and `why` the
    phrases that drove it, both empty when no model is loaded.
    """

    post_key: str
    rule_id: str
    category: str
    severity: int
    spans: tuple[Span, ...] = ()
    probability: float | None = None
    why: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Rejected:
    """A record a source could not turn into a Post, kept as it came (for the quarantine) with the reason."""

    record: Any  # the platform's JSON object, or the line of text when it was not even JSON
    error: str


@dataclass(frozen=True)
class Fetch:
    """What one poll of one feed returned.

    `cursor` is where the next poll starts; it is saved in the same transaction as `posts`.
    `read` counts the posts the platform returned (X bills per post read), duplicates included.
    `accounts` holds (platform, username, user id) learned during this poll, to be kept in the database.
    `rejected` holds the records that could not become posts: quarantined, and the cursor moves past them.
    `more` says the batch was cut at the source's bound and more posts are ready now (`once` and backfills
    poll again at once).
    `read_ids` holds the id of every post object X returned (its billing unit), for the spend ledger.
    """

    posts: tuple[Post, ...]
    cursor: str | None
    read: int = 0
    accounts: tuple[tuple[str, str, str], ...] = ()
    rejected: tuple[Rejected, ...] = ()
    more: bool = False
    read_ids: tuple[str, ...] = ()
