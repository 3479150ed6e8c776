"""Threads through Meta's Threads API (graph.threads.net) with a user access token.

Quirks kept here: the feed "me" is the token owner, read from /me/threads and (with `replies`) /me/replies;
any other feed is a public profile read from /profile_posts, which needs the threads_profile_discovery
permission. A poll asks for posts `since` the newest time it has seen (Unix seconds, one per endpoint, in a
JSON cursor) and follows `after` cursors until caught up; the first poll takes one page of `first_poll_limit`.
A repost (REPOST_FACADE) carries no text of its own. Long-lived tokens last 60 days: TokenKeeper refreshes the
token before then and keeps the new one in memory and in a file of its own (mode 0600), never in the database
or a log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bot.models import Fetch, Post
from bot.sources import CLOCK_SLACK, SourceError, posts_in_time_order
from bot.sources.graph import GraphClient, mentions_in, paging_after
from bot.timeutil import iso, parse_datetime, utcnow
from config import SourceConfig
from config.sources import THREADS_OWNER, threads_permissions

log = logging.getLogger("ringside.threads")

API = "https://graph.threads.net/v1.0"
# Meta documents the token refresh without a version: https://graph.threads.net/refresh_access_token
REFRESH_URL = "https://graph.threads.net/refresh_access_token"
FIELDS = ",".join(
    [
        "id",
        "media_product_type",
        "media_type",
        "text",
        "permalink",
        "timestamp",
        "username",
        "shortcode",
        "is_quote_post",
        "quoted_post",
        "reposted_post",
        "is_reply",
        "replied_to",
        "root_post",
    ]
)
PAGE_SIZE = 100
MAX_PAGES = 20  # 2,000 posts a poll: a profile that posts more between two polls loses its oldest
TOKEN_LIFETIME = timedelta(days=60)
REFRESH_WHEN_LEFT = timedelta(days=30)  # refresh at half its life, so a failing refresh has weeks to recover
WARN_WHEN_LEFT = timedelta(days=7)
RETRY_REFRESH = timedelta(days=1)  # Meta refuses to refresh a token younger than a day


class ThreadsSource:
    platform = "threads"

    def __init__(
        self,
        name: str,
        client: GraphClient,
        tokens: TokenKeeper,
        accounts: Iterable[str],
        first_poll_limit: int = 20,
        replies: bool = True,
    ) -> None:
        self.name = name
        self.client = client
        self.tokens = tokens
        self.accounts = [a.lower() for a in accounts]
        self.first_poll_limit = first_poll_limit
        self.replies = replies

    @classmethod
    def from_config(cls, config: SourceConfig, data_dir: Path) -> ThreadsSource:
        secret = config.secrets["token"]
        client = GraphClient(API, "Threads", secret.env_name, config.options["timeout"], None)
        token_file = config.options["token_file"] or data_dir / f"threads-token-{config.name}.json"
        return cls(
            config.name,
            client,
            TokenKeeper(secret.reveal(), secret.env_name, Path(token_file), client),
            config.options["accounts"],
            first_poll_limit=config.options["first_poll_limit"],
            replies=config.options["replies"],
        )

    def feeds(self) -> list[str]:
        return list(self.accounts)

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        since = _load_cursor(cursor)
        records: list[dict[str, Any]] = []
        newest = dict(since)
        read = 0
        for endpoint, path, params in self._endpoints(feed):
            items = self._read(path, params, since.get(endpoint), self.needs(feed))
            read += len(items)
            records.extend(items)
            newest[endpoint] = max([since.get(endpoint, 0), *map(_unix_time, items)])
        return self._to_fetch(records, feed, cursor, newest, read)

    def needs(self, feed: str) -> str:
        """The permissions polling `feed` needs, as one phrase for messages."""
        return " and ".join(threads_permissions(feed, self.replies))

    def probe(self, feed: str) -> str:
        """Ask Threads once for one post of each of `feed`'s endpoints; a line saying what came back, or a
        SourceError naming the permission a refusal needs."""
        seen = 0
        for _, path, params in self._endpoints(feed):
            page = self.client.get(
                path, {**params, "fields": FIELDS, "limit": 1}, self.tokens.current(), self.needs(feed)
            )
            seen += len(_items(page))
        return f"ok: answered ({seen} post(s) in a one-post sample); needs {self.needs(feed)}"

    def _endpoints(self, feed: str) -> list[tuple[str, str, dict[str, Any]]]:
        if feed == THREADS_OWNER:
            endpoints = [("threads", "me/threads", {})]
            return endpoints + ([("replies", "me/replies", {})] if self.replies else [])
        return [("threads", "profile_posts", {"username": feed})]

    def _read(self, path: str, params: dict[str, Any], since: int | None, needs: str) -> list[dict[str, Any]]:
        """The posts of one endpoint since `since`, every page; without `since`, one page of the first-poll
        limit."""
        params = {**params, "fields": FIELDS}
        if since is None:
            page = self.client.get(
                path, {**params, "limit": self.first_poll_limit}, self.tokens.current(), needs
            )
            return _items(page)
        params |= {"since": since, "limit": PAGE_SIZE}
        items: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            page = self.client.get(path, params, self.tokens.current(), needs)
            items.extend(_items(page))
            after = paging_after(page)
            if after is None:
                break
            params["after"] = after
        else:
            log.warning(
                "%s: more than %d posts since the last poll; older ones in this gap are not fetched",
                path,
                len(items),
            )
        return items

    def _to_fetch(
        self, records: list[Any], feed: str, cursor: str | None, newest: dict[str, int], read: int
    ) -> Fetch:
        posts, rejected = posts_in_time_order(
            records,
            lambda item: post_from_thread(item, feed),
            keep_newest=self.first_poll_limit if cursor is None else None,
        )
        new_cursor = json.dumps(newest, sort_keys=True) if any(newest.values()) else cursor
        return Fetch(posts=posts, cursor=new_cursor, read=read, rejected=rejected)


def post_from_thread(item: dict[str, Any], feed: str) -> Post:
    """A Post from one Threads media object; a repost points at its original through `quote_of`."""
    if not isinstance(item.get("id"), str) or not item["id"]:
        raise ValueError(f"field 'id' must be a non-empty string, got {item.get('id')!r}")
    text = item.get("text") or ""
    if not isinstance(text, str):
        raise ValueError(f"field 'text' must be a string, got {type(text).__name__}")
    author = item.get("username") or (feed if feed != THREADS_OWNER else "unknown")
    quoted, reposted = _ref(item, "quoted_post"), _ref(item, "reposted_post")
    replied_to = _ref(item, "replied_to")
    kind = "repost" if reposted else "quote" if quoted or item.get("is_quote_post") is True else "post"
    if kind == "post" and (replied_to or item.get("is_reply") is True):
        kind = "reply"
    return Post(
        platform="threads",
        id=item["id"],
        author=author,
        text=text,
        url=item.get("permalink") or _permalink(author, item.get("shortcode")),
        created_at=parse_datetime(item["timestamp"]),
        kind=kind,
        reply_to=replied_to,
        quote_of=quoted or reposted,
        mentions=mentions_in(text),
        conversation_id=_ref(item, "root_post"),
        raw=item,
    )


def _ref(item: dict[str, Any], field: str) -> str | None:
    """The id of the post `field` refers to ({"id": "..."}), or None."""
    value = item.get(field)
    ref = value.get("id") if isinstance(value, dict) else None
    return str(ref) if ref else None


def _permalink(author: str, shortcode: Any) -> str | None:
    return f"https://www.threads.net/@{author}/post/{shortcode}" if isinstance(shortcode, str) else None


def _items(page: dict[str, Any]) -> list[Any]:
    data = page.get("data")
    if not isinstance(data, list):
        raise SourceError("Threads sent a page without its 'data' list")
    return data


def _unix_time(item: Any) -> int:
    """A post's time in Unix seconds for the cursor; 0 when it has none, or one in the future (quarantined:
    a cursor moved there would hide every post until then)."""
    try:
        moment = parse_datetime(item["timestamp"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return 0
    return int(moment.timestamp()) if moment <= utcnow() + CLOCK_SLACK else 0


def _load_cursor(cursor: str | None) -> dict[str, int]:
    """The newest post time seen per endpoint; {} for a first poll."""
    if not cursor:
        return {}
    try:
        loaded = json.loads(cursor)
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict) or not all(isinstance(v, int) for v in loaded.values()):
        # A cursor this code cannot read would stop the feed for good: start again as a first poll (at most
        # first_poll_limit posts; the store drops any it already has), as RSS does.
        log.warning("the saved cursor %r is not a Threads cursor; polling as the first time", cursor[:80])
        return {}
    return loaded


# -- the access token --------------------------------------------------------------------------------------


class TokenKeeper:
    """The Threads access token in use: the environment's, or a refreshed one kept in `path`.

    A refreshed token is written to `path` (mode 0600) with the fingerprint of the environment token it
    descends from; the next start prefers the file while the environment still holds that same token (the
    file's is newer), and the environment's once the operator sets another."""

    def __init__(self, env_token: str, env_name: str, path: Path, client: GraphClient) -> None:
        self.env_name = env_name
        self.path = path
        self.client = client
        self.origin = _fingerprint(env_token)
        self.token = env_token
        self.expires_at: datetime | None = None  # unknown for a token from the environment
        self.next_refresh = utcnow()
        self._lock = threading.Lock()  # the feeds of one source poll in parallel: one refresh at a time
        self._load()

    def current(self) -> str:
        """The token to use now, refreshed first when it is due (a failed refresh keeps the old token)."""
        with self._lock:
            now = utcnow()
            left = None if self.expires_at is None else self.expires_at - now
            if now >= self.next_refresh and (left is None or left <= REFRESH_WHEN_LEFT):
                self._refresh(now, left)
            return self.token

    def _refresh(self, now: datetime, left: timedelta | None) -> None:
        params = {"grant_type": "th_refresh_token"}
        try:
            answer = self.client.get(REFRESH_URL, params, self.token, "threads_basic")
            token, lifetime = answer["access_token"], int(answer.get("expires_in") or 0)
            if not isinstance(token, str) or not token:
                raise ValueError("no access_token")
        except (SourceError, KeyError, ValueError, TypeError) as error:
            self.next_refresh = now + RETRY_REFRESH
            reason = str(error) if isinstance(error, SourceError) else "an answer without a token"
            if left is not None and left <= WARN_WHEN_LEFT:
                log.warning(
                    "the Threads access token expires on %s and cannot be refreshed (%s); "
                    "set a new one in %s",
                    iso(self.expires_at) if self.expires_at else "?",
                    reason,
                    self.env_name,
                )
            else:
                log.info("the Threads access token was not refreshed (%s); trying again in a day", reason)
            return
        self.token = token
        self.expires_at = now + (timedelta(seconds=lifetime) if lifetime > 0 else TOKEN_LIFETIME)
        self.next_refresh = now
        self._save(now)
        log.info("the Threads access token was refreshed; valid until %s", iso(self.expires_at))

    def _load(self) -> None:
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            log.warning(
                "%s: cannot read the saved Threads token (%s); using %s",
                self.path,
                type(error).__name__,
                self.env_name,
            )
            return
        if not isinstance(saved, dict) or saved.get("from") != self.origin:
            return  # the operator set another token since: the environment's is the newer one
        try:
            token, expires_at = saved["access_token"], parse_datetime(saved["expires_at"])
        except (KeyError, TypeError, ValueError, AttributeError):
            log.warning("%s: the saved Threads token is incomplete; using %s", self.path, self.env_name)
            return
        if isinstance(token, str) and token:
            self.token, self.expires_at = token, expires_at

    def _save(self, now: datetime) -> None:
        """Write the token to `path` readable by its owner alone, replacing the old file in one step."""
        assert self.expires_at is not None
        document = {
            "access_token": self.token,
            "expires_at": iso(self.expires_at),
            "refreshed_at": iso(now),
            "from": self.origin,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".tmp")
            handle = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(document, file)
            os.chmod(partial, 0o600)
            os.replace(partial, self.path)
        except OSError as error:
            log.warning(
                "%s: cannot save the refreshed Threads token (%s); it lasts until this process stops",
                self.path,
                error.strerror,
            )


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
