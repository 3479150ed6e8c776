"""X (Twitter) through tweepy's v2 Client with an app bearer token.

Quirks kept here: usernames are resolved to ids once (and stored by the pipeline); a timeline is polled with
since_id and paginated until caught up; the first poll of an account takes only its newest posts; a
note_tweet's full text replaces the truncated text; a repost's cut copy gives way to its original's whole text
when X includes the original; X's &amp; &lt; &gt; escapes are undone; an edited post keeps the id of its first
version; a 429 pauses only that feed until X's reset time. With `batch = true`, accounts are polled together
through search_recent_tweets, one `from:a OR from:b` query per 512 characters, each with its own cursor.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import requests
import tweepy

from bot import metrics
from bot.models import Fetch, Post, Rejected
from bot.sources import RateLimited, SourceError, post_or_rejected, reset_from_epoch, sanitised
from bot.timeutil import iso, parse_datetime, utcnow
from config import SourceConfig

log = logging.getLogger("ringside.x")

TWEET_FIELDS = [
    "created_at",
    "author_id",
    "conversation_id",
    "referenced_tweets",
    "entities",
    "lang",
    "note_tweet",
    "edit_history_tweet_ids",
]
EXPANSIONS = [
    "author_id",
    "referenced_tweets.id",
    "referenced_tweets.id.author_id",
    "entities.mentions.username",
]
USER_FIELDS = ["username", "name"]
KIND_OF_REFERENCE = {"retweeted": "repost", "quoted": "quote", "replied_to": "reply"}
MAX_QUERY = 512
# A poll's bound: 32 pages of 100 posts. users/:id/tweets serves at most the newest 3,200 posts anyway; a
# search batch with more new posts than that hands them out in batches (see CatchUp).
MAX_PAGES = 32
BATCH_PREFIX = "batch:"
# Recent search asks for its next page as `next_token`, the timeline as `pagination_token`; tweepy sends
# any other name on regardless, with an "Unexpected parameter" warning.
SEARCH_PAGE_PARAM = "next_token"
REPOST_PREFIX = re.compile(r"RT @\w+: ")
X_ESCAPE = re.compile(r"&(amp|lt|gt);")
X_ESCAPED = {"amp": "&", "lt": "<", "gt": ">"}


@dataclass(frozen=True)
class CatchUp:
    """Where a feed's polling stands. Caught up, the cursor is the newest id seen (`since_id`). A poll that
    reached its bound with pages left hands out what it read and resumes there: X's `next_token` for the rest
    of the same `since_id`, and the newest id handed out so far, which becomes the cursor once the rest is
    read. The newest posts come first, so a catch-up stores them in batches from new to old."""

    since_id: str | None
    next_token: str | None = None
    newest: int = 0

    @classmethod
    def from_cursor(cls, cursor: str | None) -> CatchUp:
        if not cursor or not cursor.startswith("{"):
            return cls(cursor or None, None, int(cursor) if cursor and cursor.isdigit() else 0)
        try:
            saved = json.loads(cursor)
            return cls(saved["since_id"], str(saved["next_token"]), int(saved["newest"]))
        except (ValueError, KeyError, TypeError):
            log.warning("the saved cursor %r is not an X cursor; polling as the first time", cursor[:80])
            return cls(None)

    def cursor(self) -> str | None:
        if self.next_token is None:
            return str(self.newest) if self.newest else self.since_id
        return json.dumps(
            {"since_id": self.since_id, "next_token": self.next_token, "newest": str(self.newest)}
        )


class _TimeoutSession(requests.Session):
    """tweepy sets no timeout; a hung connection must not hold a worker forever."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


class XSource:
    platform = "x"

    def __init__(
        self,
        name: str,
        client: tweepy.Client,
        accounts: Iterable[str],
        first_poll_limit: int = 20,
        batch: bool = False,
        known_ids: dict[str, str] | None = None,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self.name = name
        self.client = client
        self.accounts = [a.lower() for a in accounts]
        self.first_poll_limit = first_poll_limit
        self.batch = batch
        self.max_pages = max_pages
        self.ids = {k.lower(): v for k, v in (known_ids or {}).items()}
        # Ids resolved but not yet handed back in a Fetch (the poll that resolved them may have failed).
        self._unsaved: dict[str, str] = {}

    @classmethod
    def from_config(cls, config: SourceConfig, known_ids: dict[str, str]) -> XSource:
        assert config.secret is not None, "settings guarantee an X source has its token"
        client = tweepy.Client(
            bearer_token=config.secret.reveal(), return_type=dict, wait_on_rate_limit=False
        )
        client.session = _TimeoutSession(config.options["timeout"])
        return cls(
            config.name,
            client,
            config.options["accounts"],
            first_poll_limit=config.options["first_poll_limit"],
            batch=config.options["batch"],
            known_ids=known_ids,
        )

    def feeds(self) -> list[str]:
        if not self.batch:
            return list(self.accounts)
        return [BATCH_PREFIX + ",".join(group) for group in batch_accounts(self.accounts)]

    def fetch(self, feed: str, cursor: str | None, max_posts: int | None = None) -> Fetch:
        """New posts of `feed` after `cursor`, at most `max_pages` pages of them; `more` when X has more
        pages of new posts, which the next fetch reads (the cursor says where). `max_posts` (what the
        operator's budget leaves) stops the pages sooner: at most one page's minimum (10) beyond it."""
        position = CatchUp.from_cursor(cursor)
        try:
            return self._fetch(feed, position, max_posts)
        except ExpiredPage as error:
            # The rest of the catch-up cannot be paged to any more: the posts older than what was handed
            # out and newer than since_id are skipped, and polling goes on from the newest handed out.
            log.warning(
                "%s: %s; posts older than %d and newer than %s are skipped",
                feed,
                error,
                position.newest,
                position.since_id,
            )
            return Fetch(posts=(), cursor=CatchUp(position.since_id, None, position.newest).cursor())

    def _fetch(self, feed: str, position: CatchUp, max_posts: int | None) -> Fetch:
        if feed.startswith(BATCH_PREFIX):
            query = search_query(feed.removeprefix(BATCH_PREFIX).split(","))
            search = self.client.search_recent_tweets
            try:
                pages, left = self._pages(
                    search, position, max_posts, min_results=10, page_param=SEARCH_PAGE_PARAM, query=query
                )
            except StaleCursor:
                # Recent search reaches back 7 days: after a longer stop the gap cannot be fetched at all, and
                # keeping the old since_id would fail forever. Say so, and start again from the newest posts.
                log.warning(
                    "%s: since_id %s is older than recent search reaches (7 days); posts between "
                    "then and now cannot be fetched; starting again from the newest",
                    feed,
                    position.since_id,
                )
                position = CatchUp(None)
                pages, left = self._pages(
                    search, position, max_posts, min_results=10, page_param=SEARCH_PAGE_PARAM, query=query
                )
        else:
            self._resolve(feed)
            pages, left = self._pages(
                self.client.get_users_tweets, position, max_posts, min_results=5, id=self.ids[feed]
            )
        learned = tuple(("x", name, uid) for name, uid in self._unsaved.items())
        fetch = self._to_fetch(pages, position, left, learned)
        self._unsaved.clear()
        return fetch

    def _resolve(self, username: str) -> None:
        """Look up ids for this account (and any other not yet known) in one call, and keep them."""
        if username in self.ids:
            return
        unknown = [a for a in self.accounts if a not in self.ids] or [username]
        response = self._call(self.client.get_users, usernames=unknown[:100], user_fields=USER_FIELDS)
        learned = {u["username"].lower(): str(u["id"]) for u in response.get("data") or []}
        self.ids.update(learned)
        self._unsaved.update(learned)
        if username not in self.ids:
            raise SourceError(f"no X account named @{username} (check the name in the settings)")

    def _pages(
        self,
        endpoint: Callable[..., dict],
        position: CatchUp,
        max_posts: int | None,
        min_results: int,
        page_param: str = "pagination_token",
        **args: Any,
    ) -> tuple[list[dict], str | None]:
        """The pages from `position` on, at most `max_pages` and about `max_posts` posts, and the token of the
        next page when X has more new posts than that; without a since_id, just enough for the first-poll
        limit (or `max_posts`, if fewer).

        Each page's meta.next_token is sent back as `page_param`, the name the endpoint documents.
        """
        args |= {"tweet_fields": TWEET_FIELDS, "expansions": EXPANSIONS, "user_fields": USER_FIELDS}
        if position.since_id:
            args["since_id"] = position.since_id
            wanted = None
        else:
            wanted = self.first_poll_limit
        if wanted is None or (max_posts is not None and max_posts < wanted):
            wanted = max_posts
        pages: list[dict] = []
        token = position.next_token
        while len(pages) < self.max_pages:
            size = 100 if wanted is None else max(min_results, min(100, wanted - _count(pages)))
            try:
                page = self._call(endpoint, max_results=size, **{page_param: token}, **args)
            except ExpiredPage as error:
                if not pages and position.next_token is not None and token == position.next_token:
                    raise
                raise SourceError(str(error)) from None
            except SourceError as error:
                if not pages or not position.since_id:
                    raise
                # X billed the pages read: hand them out and resume at this page, rather than read them
                # again (billed again after midnight) and never get past a page that keeps failing.
                log.warning(
                    "%s: page %d failed (%s); the next poll resumes there", self.name, len(pages) + 1, error
                )
                return pages, token
            metrics.X_POSTS_READ.inc(len(page.get("data") or []))
            pages.append(page)
            token = (page.get("meta") or {}).get("next_token")
            if not token:
                return pages, None
            if wanted is not None and _count(pages) >= wanted:
                # A first poll takes only its newest posts; a budget's stop resumes from here later.
                return pages, token if position.since_id else None
        return pages, token if position.since_id else None

    def _to_fetch(self, pages: list[dict], position: CatchUp, left: str | None, learned: tuple) -> Fetch:
        read = _count(pages)
        posts: dict[str, Post] = {}
        rejected: list[Rejected] = []
        newest = position.newest
        for page in pages:
            includes = page.get("includes") or {}
            users = sanitised(_included_users(includes))
            # A repost's original is only in the includes of the page that holds the repost.
            included = sanitised(_included_tweets(includes))
            convert = partial(post_from_tweet, usernames=users, included=included)
            for tweet in page.get("data") or []:
                newest = max(newest, _tweet_id(tweet))  # past a rejected tweet too: it is not fetched again
                post = post_or_rejected(tweet, convert)
                if isinstance(post, Rejected):
                    rejected.append(post)
                    continue
                if post.key not in posts or int(post.version_id or 0) > int(posts[post.key].version_id or 0):
                    posts[post.key] = post
        ordered = sorted(posts.values(), key=lambda p: int(p.version_id or p.id), reverse=True)
        if position.since_id is None:
            ordered = ordered[: self.first_poll_limit]
        if left:
            log.info(
                "%s: more than %d pages of new posts; the rest follows in the next batch",
                self.name,
                len(pages),
            )
        return Fetch(
            posts=tuple(reversed(ordered)),
            cursor=CatchUp(position.since_id, left, newest).cursor(),
            read=read,
            accounts=learned,
            rejected=tuple(rejected),
            more=left is not None,
            read_ids=_read_ids(pages),
        )

    def _call(self, endpoint: Callable[..., dict], **args: Any) -> dict:
        """Call X and turn its failures into SourceError messages that never carry the token."""
        args = {k: v for k, v in args.items() if v is not None}
        try:
            answer = endpoint(**args)
        except tweepy.TooManyRequests as error:
            metrics.X_REQUESTS.labels("rate_limited").inc()
            reset_at = _reset_time(error.reset_time)
            raise RateLimited(f"X rate limit reached (429); paused until {iso(reset_at)}", reset_at) from None
        except (tweepy.HTTPException, requests.RequestException) as error:
            metrics.X_REQUESTS.labels("error").inc()
            raise _source_error(error) from None
        metrics.X_REQUESTS.labels("ok").inc()
        return answer


class StaleCursor(SourceError):
    """X refused the since_id as too old for the endpoint (recent search: 7 days)."""


class ExpiredPage(SourceError):
    """X refused the page token a catch-up saved (tokens do not last forever)."""


def _source_error(error: Exception) -> SourceError:
    if isinstance(error, tweepy.Unauthorized):
        return SourceError("X refused the bearer token (401 Unauthorized); check X_BEARER_TOKEN")
    if isinstance(error, tweepy.Forbidden):
        return SourceError(f"X refused access (403 Forbidden): {_problems(error)}")
    if isinstance(error, tweepy.TwitterServerError):
        return SourceError(f"X server error ({error.response.status_code}); retrying next poll")
    if isinstance(error, tweepy.BadRequest) and "since_id" in _problems(error):
        return StaleCursor(f"X refused the since_id: {_problems(error)}")
    if isinstance(error, tweepy.BadRequest) and re.search("next_token|pagination_token", _problems(error)):
        return ExpiredPage(f"X refused the saved page token: {_problems(error)}")
    if isinstance(error, tweepy.HTTPException):
        return SourceError(f"X answered {error.response.status_code}: {_problems(error)}")
    return SourceError(f"cannot reach X: {type(error).__name__}")


def post_from_tweet(
    tweet: dict[str, Any], usernames: dict[str, str], included: dict[str, dict[str, Any]] | None = None
) -> Post:
    """A Post from one X API v2 tweet object. `usernames` maps author ids to handles and `included` maps ids
    to the posts tweets refer to (both from the same answer's includes); a repost takes its original's text.
    """
    history = tweet.get("edit_history_tweet_ids") or [tweet["id"]]
    for field, value in (("id", tweet["id"]), ("edit_history_tweet_ids", history[0])):
        if not (isinstance(value, str) and value.isascii() and value.isdigit()):
            raise ValueError(f"field {field!r} must be a numeric id, got {value!r}")
    references = {ref["type"]: ref["id"] for ref in tweet.get("referenced_tweets") or []}
    kind = next((KIND_OF_REFERENCE[t] for t in KIND_OF_REFERENCE if t in references), "post")
    author = usernames.get(tweet.get("author_id", ""), tweet.get("author_id") or "unknown")
    original = (included or {}).get(references.get("retweeted", ""))
    return Post(
        platform="x",
        id=str(history[0]),
        version_id=str(tweet["id"]),
        author=author,
        author_id=tweet.get("author_id"),
        text=post_text(tweet, original),
        url=f"https://x.com/{author}/status/{history[0]}",
        created_at=parse_datetime(tweet["created_at"]) if tweet.get("created_at") else utcnow(),
        lang=tweet.get("lang"),
        kind=kind,
        reply_to=references.get("replied_to"),
        quote_of=references.get("quoted") or references.get("retweeted"),
        mentions=_mentions(tweet, original),
        conversation_id=tweet.get("conversation_id"),
        raw=tweet,
    )


def post_text(tweet: dict[str, Any], original: dict[str, Any] | None) -> str:
    """The whole text of a post as its author wrote it.

    X cuts a repost's own copy ("RT @author: In 1986, Larry Bird …"); when the reposted original came in the
    same answer, the repost's text is X's "RT @author: " prefix followed by the original's whole text, so a
    repost reads the same whether or not its original was included.
    """
    if original is None:
        return unescape(_whole_text(tweet))
    prefix = REPOST_PREFIX.match(tweet.get("text", ""))
    return unescape((prefix[0] if prefix else "") + _whole_text(original))


def unescape(text: str) -> str:
    """`text` with X's HTML escapes undone.

    X writes &, < and > in post text as &amp; &lt; &gt; and escapes nothing else, so only those three are
    undone, in one pass: a typed "&amp;" (served as "&amp;amp;") stays "&amp;", and whatever X left alone is
    left alone (html.unescape would also turn a typed "&copy" or "&nbsp;" into other characters).
    """
    return X_ESCAPE.sub(lambda escape: X_ESCAPED[escape[1]], text)


def _whole_text(tweet: dict[str, Any]) -> str:
    """A long post's full note_tweet text, or else the text X serves (which X cuts short for a long post)."""
    return (tweet.get("note_tweet") or {}).get("text") or tweet.get("text", "")


def _mentions(tweet: dict[str, Any], original: dict[str, Any] | None) -> tuple[str, ...]:
    """The usernames a post mentions: a repost's own (the reposted author) and then its original's others."""
    own = _mentioned(tweet)
    return own + tuple(name for name in _mentioned(original or {}) if name not in own)


def _mentioned(tweet: dict[str, Any]) -> tuple[str, ...]:
    entities = (tweet.get("note_tweet") or {}).get("entities") or tweet.get("entities") or {}
    return tuple(m["username"] for m in entities.get("mentions") or [] if m.get("username"))


def search_query(accounts: Iterable[str]) -> str:
    return " OR ".join(f"from:{a}" for a in accounts)


def batch_accounts(accounts: list[str], limit: int = MAX_QUERY) -> list[list[str]]:
    """Accounts grouped so that each group's `from:a OR from:b` query fits in `limit` characters."""
    groups: list[list[str]] = []
    for account in accounts:
        if groups and len(search_query([*groups[-1], account])) <= limit:
            groups[-1].append(account)
        else:
            groups.append([account])
    return groups


def _included_users(includes: dict[str, Any]) -> dict[str, str]:
    """Author ids to handles; an entry X sent without an id or a handle is left out (its posts show the
    author's id instead)."""
    users = [u for u in includes.get("users") or [] if isinstance(u, dict)]
    return {u["id"]: u["username"] for u in users if u.get("id") and u.get("username")}


def _included_tweets(includes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The posts the page's tweets refer to, by id; one without an id cannot be referred to: left out."""
    tweets = includes.get("tweets") or []
    return {t["id"]: t for t in tweets if isinstance(t, dict) and isinstance(t.get("id"), str)}


def _tweet_id(tweet: Any) -> int:
    """A tweet's id as a number for the cursor; 0 when it has none (it cannot move the cursor)."""
    try:
        return int(tweet["id"])
    except (KeyError, TypeError, ValueError):
        return 0


def _read_ids(pages: list[dict]) -> tuple[str, ...]:
    """The id of every post object in the pages' `data`, rejected ones too: X bills each post it returns
    (not the posts in `includes`), once per UTC day; the spend ledger (bot.spend) counts them."""
    return tuple(
        str(t["id"]) for page in pages for t in page.get("data") or [] if isinstance(t, dict) and t.get("id")
    )


def _count(pages: list[dict]) -> int:
    return sum(len(page.get("data") or []) for page in pages)


def _reset_time(reset: int | None) -> datetime:
    """X's reset moment, or 15 minutes (one rate-limit window) when it did not say."""
    return reset_from_epoch(reset, timedelta(minutes=15))


def _problems(error: tweepy.HTTPException) -> str:
    messages = [str(m) for m in (error.api_messages or [])][:3]
    return "; ".join(messages) or (error.response.reason or "no detail")
