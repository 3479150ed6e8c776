"""RSS and Atom feeds through feedparser: the press (which retells exchanges, in French too) and bridges
that show other platforms as feeds.

Quirks kept here: the bytes are fetched with requests (a User-Agent naming Ringside, a deadline, a size cap)
and handed to feedparser as a stream, never as a string it could take for a URL or a file name. Each feed
is polled with a conditional GET (the ETag and Last-Modified kept in its cursor), so a feed that did not
change costs one 304. A feed is a window, not a timeline: entries come and go and may have no date, so the
cursor keeps the keys of the entries already seen (the last SEEN_LIMIT, each with a digest of its text) and
an entry is returned when its key is new, or again when its text changed (an edit). When every entry of a
poll is new, the feed may have moved on by more than a page: RFC 5005 `next` links are followed, a few
pages at most. An entry is a post, or a reply when it carries Atom threading's in-reply-to; RSS has no
quotes or reposts.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from calendar import timegm
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser
import requests
import urllib3

from bot.models import Fetch, Post, Rejected
from bot.notifiers.http import USER_AGENT, Deadline, Reply, retry_after, session
from bot.sources import RateLimited, SourceError, post_or_rejected
from bot.sources.html_text import holds_markup, html_to_text
from bot.timeutil import iso, utcnow
from config import SourceConfig

log = logging.getLogger("ringside.rss")

MAX_FEED_BYTES = 4 * 1024 * 1024  # the largest real feeds are a few hundred KiB; more is not a feed
SEEN_LIMIT = 500  # entry keys kept in a cursor: more than any feed shows at once
MAX_PAGES = 5  # RFC 5005 `next` pages followed in one poll when a whole page was new
READ_SIZE = 16 * 1024  # read at a time; decompressed, one piece stays a few MiB at worst
MAX_REDIRECTS = 5  # feeds move (http to https, a new path); a longer chain is a loop
CONNECT_TIMEOUT = 5.0
DEFAULT_PAUSE = timedelta(minutes=30)  # a 429 that did not say how long
LONGEST_PAUSE = timedelta(hours=24)  # a Retry-After beyond this is taken as a day
ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.1"
)
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S")
_DATE_KEYS = ("published_parsed", "updated_parsed", "created_parsed")


@dataclass(frozen=True)
class FeedCursor:
    """Where one feed stands: its validators for a conditional GET, and the entries already seen (a digest
    of each key, with a digest of its text), newest first."""

    etag: str | None = None
    modified: str | None = None
    seen: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, cursor: str | None) -> FeedCursor | None:
        """The cursor saved by an earlier poll; None before the first poll (or for one that cannot be read,
        which then starts again like a first poll rather than failing forever)."""
        if not cursor:
            return None
        try:
            data = json.loads(cursor)
            return cls(data.get("etag"), data.get("modified"), dict(data.get("seen") or {}))
        except (ValueError, TypeError, AttributeError):
            log.warning("unreadable RSS cursor %r; starting again from the newest entries", cursor[:80])
            return None

    def dumps(self) -> str:
        return json.dumps({"etag": self.etag, "modified": self.modified, "seen": self.seen})


class RssSource:
    platform = "rss"

    def __init__(
        self,
        name: str,
        feeds: Iterable[str],
        authors: dict[str, str] | None = None,
        first_poll_limit: int = 20,
        timeout: float = 20.0,
    ) -> None:
        self.name = name
        self.urls = list(feeds)
        self.authors = dict(authors or {})
        self.first_poll_limit = first_poll_limit
        self.timeout = timeout
        self.session = session()
        self.session.max_redirects = MAX_REDIRECTS

    @classmethod
    def from_config(cls, config: SourceConfig) -> RssSource:
        feeds = config.options["feeds"]
        return cls(
            config.name,
            [f["url"] for f in feeds],
            authors={f["url"]: f["author"] for f in feeds if f["author"]},
            first_poll_limit=config.options["first_poll_limit"],
            timeout=config.options["timeout"],
        )

    def feeds(self) -> list[str]:
        return list(self.urls)

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        """The entries of `feed` not seen before (or whose text changed); the first poll takes only the
        newest `first_poll_limit` but marks every entry of the feed as seen."""
        state = FeedCursor.parse(cursor)
        answer = self._get(feed, state)
        if answer is None:  # 304: not modified
            return Fetch(posts=(), cursor=cursor)
        parsed, headers = answer
        entries = list(parsed.entries)
        if state is not None and state.seen:
            entries += self._next_pages(feed, parsed, state)
        fetched_at = utcnow()
        channel = dict(parsed.feed)
        convert = partial(
            post_from_entry,
            feed_url=feed,
            channel=channel,
            author=self.authors.get(feed),
            fetched_at=fetched_at,
        )
        return self._to_fetch(feed, entries, state, convert, headers)

    def _to_fetch(
        self, feed: str, entries: list[Any], state: FeedCursor | None, convert: Any, headers: dict[str, str]
    ) -> Fetch:
        seen = dict(state.seen) if state else {}
        posts: dict[str, Post] = {}
        rejected: list[Rejected] = []
        current: dict[str, str] = {}
        undated = 0
        for entry in entries:
            post = post_or_rejected(entry, convert)
            if isinstance(post, Rejected):
                rejected.append(Rejected(_plain(entry), post.error))  # the pipeline logs and quarantines it
                continue
            key, digest = _digest(post.id), _digest(post.text)
            if key in current:  # the same entry twice in one answer (a page overlap): the first is newest
                continue
            current[key] = digest
            if seen.get(key) != digest:
                posts[post.key] = post
                undated += _entry_time(entry) is None
        if undated:
            log.info("%s: %d new entries have no date; stamped with the fetch time", feed, undated)
        chosen = list(posts.values())
        if state is None:
            chosen = sorted(chosen, key=lambda p: p.created_at, reverse=True)[: self.first_poll_limit]
        new_seen = current | {k: v for k, v in seen.items() if k not in current}
        limit = max(SEEN_LIMIT, len(current))
        cursor = FeedCursor(
            etag=headers.get("etag"),
            modified=headers.get("last-modified"),
            seen=dict(list(new_seen.items())[:limit]),
        )
        return Fetch(
            posts=tuple(sorted(chosen, key=lambda p: p.created_at)),
            cursor=cursor.dumps(),
            read=len(entries),
            rejected=tuple(rejected),
        )

    def _next_pages(self, feed: str, parsed: Any, state: FeedCursor) -> list[Any]:
        """Entries of the RFC 5005 `next` pages, followed while every entry of a page is new (the feed moved
        on by more than a page since the last poll), at most MAX_PAGES pages."""
        entries: list[Any] = []
        page = parsed
        for _ in range(MAX_PAGES - 1):
            if not _all_new(page.entries, state, feed):
                break
            link = _next_link(page, feed)
            if link is None:
                break
            answer = self._get(link, None)
            if answer is None:
                break
            page = answer[0]
            entries += list(page.entries)
        else:
            if _all_new(page.entries, state, feed) and _next_link(page, feed):
                log.warning(
                    "%s: more than %d pages of new entries; older ones are not fetched", feed, MAX_PAGES
                )
        return entries

    def _get(self, url: str, state: FeedCursor | None) -> tuple[Any, dict[str, str]] | None:
        """The parsed feed at `url` and its response headers (lower-case names), or None for a 304.

        Raises RateLimited for 429 (and 503 with Retry-After), SourceError for any other failure."""
        headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT}
        if state and state.etag:
            headers["If-None-Match"] = state.etag
        if state and state.modified:
            headers["If-Modified-Since"] = state.modified
        deadline = Deadline(self.timeout)
        try:
            with deadline:
                status, answer_headers, body = self._request(url, headers)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            if deadline.expired or isinstance(
                error, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError
            ):
                raise SourceError(f"no answer within {self.timeout:g}s (timeout)") from None
            raise SourceError(f"cannot reach {urlsplit(url).hostname}: {type(error).__name__}") from None
        if deadline.expired:
            raise SourceError(f"no answer within {self.timeout:g}s (timeout)")
        if status == 304:
            return None
        _check_status(status, answer_headers)
        return parse_feed(body, answer_headers), answer_headers

    def _request(self, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        deadline = time.monotonic() + self.timeout
        response = self.session.get(
            url, headers=headers, timeout=(min(CONNECT_TIMEOUT, self.timeout), self.timeout), stream=True
        )
        try:
            answer_headers = {k.lower(): v for k, v in response.headers.items()}
            if response.status_code != 200:
                return response.status_code, answer_headers, b""  # only the status and headers matter
            return 200, answer_headers, _read_capped(response, deadline)
        finally:
            response.close()


def _read_capped(response: requests.Response, deadline: float) -> bytes:
    """The body, decompressed, refused past MAX_FEED_BYTES (a compressed bomb stops there too) or once the
    monotonic clock passes `deadline`.

    Read a piece at a time as it arrives (read1): a server that drip-feeds its answer never trips a per-read
    timeout, and the connection deadline cannot cut an answer that ends at close (http.client hands the
    socket over to the response)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_FEED_BYTES:
        raise SourceError(f"the feed is {int(declared):,} bytes; at most {MAX_FEED_BYTES:,} are read")
    chunks: list[bytes] = []
    size = 0
    while chunk := response.raw.read1(READ_SIZE, decode_content=True):
        size += len(chunk)
        if size > MAX_FEED_BYTES:
            raise SourceError(f"the feed is larger than {MAX_FEED_BYTES:,} bytes; it is not read")
        if time.monotonic() > deadline:
            raise TimeoutError("deadline passed while reading")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_status(status: int, headers: dict[str, str]) -> None:
    """Nothing for 200; RateLimited or SourceError saying what the server's answer means otherwise."""
    if status == 200:
        return
    wait = retry_after(Reply(status, {"Retry-After": headers.get("retry-after", "")}, b""))
    if status == 429 or (status == 503 and wait is not None):
        pause = DEFAULT_PAUSE if wait is None else min(timedelta(seconds=wait), LONGEST_PAUSE)
        reset_at = utcnow() + pause
        raise RateLimited(
            f"the feed's server said to wait ({status}); paused until {iso(reset_at)}", reset_at
        )
    if status in (404, 410):
        raise SourceError(f"the feed is gone ({status}); check its URL in the settings")
    if status in (401, 403):
        raise SourceError(f"the feed's server refused access ({status}); it may need a login or block robots")
    if status >= 500:
        raise SourceError(f"the feed's server failed ({status}); retrying next poll")
    raise SourceError(f"the feed's server answered {status}")


def parse_feed(body: bytes, headers: dict[str, str]) -> Any:
    """feedparser's reading of `body`. Raises SourceError with feedparser's reason when it is not a feed.

    The body goes in as a stream: given bytes or a string, feedparser would open a URL or a local file
    the body happens to name."""
    relevant = {
        k: v for k, v in headers.items() if k in ("content-type", "content-language", "content-location")
    }
    parsed = feedparser.parse(io.BytesIO(body), response_headers=relevant)
    if parsed.bozo:
        reason = str(parsed.get("bozo_exception") or "unreadable")[:200]
        if not parsed.entries:
            raise SourceError(f"not an RSS or Atom feed: {reason}")
        log.info("feed not well-formed (%s); its %d readable entries are used", reason, len(parsed.entries))
    return parsed


def post_from_entry(
    entry: dict[str, Any],
    feed_url: str,
    channel: dict[str, Any],
    author: str | None,
    fetched_at: datetime,
) -> Post:
    """A Post from one feedparser entry of the feed at `feed_url` (`channel` is the feed's own data).

    Keyed by the entry's id (guid), else its link, else a digest of its title and date; an id that is not a
    URI is made one within its feed, so two outlets' "1234" stay apart. `author` overrides the entry's."""
    text = entry_text(entry)
    if not text:
        raise ValueError("entry has no title and no text")
    link = entry.get("link") if _is_web_url(entry.get("link")) else None
    reply = next((v for k, v in entry.items() if k.endswith("_in-reply-to") and isinstance(v, dict)), None)
    return Post(
        platform="rss",
        id=entry_key(entry, feed_url),
        author=author or _author(entry, channel) or urlsplit(feed_url).hostname or feed_url,
        author_id=feed_url,
        text=text,
        url=link,
        created_at=_entry_time(entry) or fetched_at,
        lang=_language(entry, channel),
        kind="reply" if reply else "post",
        reply_to=(reply.get("ref") or reply.get("href")) if reply else None,
        raw=_plain(entry),
    )


def entry_key(entry: dict[str, Any], feed_url: str) -> str:
    # feedparser copies the id into `link` when it has no link of its own (guidislink): the id comes first.
    key = str(entry.get("id") or entry.get("link") or "").strip()
    if not key:
        basis = f"{entry.get('title', '')}\n{entry.get('published') or entry.get('updated') or ''}"
        key = "sha1:" + hashlib.sha1(basis.encode("utf-8", "replace")).hexdigest()
    return key if _URI_SCHEME.match(key) and not key.startswith("sha1:") else f"{feed_url}#{key}"


def entry_text(entry: dict[str, Any]) -> str:
    """The entry's title, a blank line, and its summary (or content) as plain text."""
    title = _plain_text(entry.get("title", ""), (entry.get("title_detail") or {}).get("type", ""))
    content = entry.get("content") or []
    body_html = entry.get("summary") or (content[0].get("value") if content else "") or ""
    body = feed_html_to_text(body_html)
    if title and body.startswith(title):
        return body
    return "\n\n".join(part for part in (title, body) if part)


def _plain_text(value: str, kind: str) -> str:
    return feed_html_to_text(value) if "html" in kind else " ".join(value.split())


def feed_html_to_text(markup: str) -> str:
    """A feed's HTML as plain text. Many feeds escape their HTML once more inside CDATA, so one pass leaves
    markup (`<p>Cage match &amp; more</p>`): HTML that had no tag of its own and reads as markup after one
    pass is converted once more. HTML with real tags is converted once: an escaped `&lt;p&gt;` in it is
    text about HTML."""
    text = html_to_text(markup)
    if holds_markup(text) and not holds_markup(markup):
        return html_to_text(text)
    return text


def _entry_time(entry: dict[str, Any]) -> datetime | None:
    """When the entry was published (else updated), from feedparser's UTC struct_time; None without one."""
    for key in _DATE_KEYS:
        parsed = entry.get(key)
        if isinstance(parsed, time.struct_time | tuple) and len(parsed) >= 6:
            return datetime.fromtimestamp(timegm(tuple(parsed)), UTC)
    return None


def _author(entry: dict[str, Any], channel: dict[str, Any]) -> str | None:
    name = entry.get("author") or (entry.get("author_detail") or {}).get("name") or channel.get("title")
    return " ".join(str(name or "").split()) or None


def _language(entry: dict[str, Any], channel: dict[str, Any]) -> str | None:
    for detail in (entry.get("title_detail"), *(entry.get("content") or []), entry.get("summary_detail")):
        if isinstance(detail, dict) and detail.get("language"):
            return str(detail["language"])
    return channel.get("language") or None


def _plain(entry: Any) -> dict[str, Any]:
    """The entry as JSON-ready data for `raw` and the quarantine (feedparser's time tuples left out)."""
    if not isinstance(entry, dict):
        return {"entry": str(entry)}
    return {k: v for k, v in entry.items() if not k.endswith("_parsed")}


def _is_web_url(value: Any) -> bool:
    return isinstance(value, str) and urlsplit(value).scheme in ("http", "https")


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:16]


def _next_link(page: Any, feed: str) -> str | None:
    """The page's RFC 5005 `next` link when it stays on the feed's own host: a feed cannot send the poller
    anywhere else (another host, a local address, file://)."""
    links = page.feed.get("links") or []
    href = next((link.get("href") for link in links if link.get("rel") == "next" and link.get("href")), None)
    if not href:
        return None
    target, home = urlsplit(urljoin(feed, href)), urlsplit(feed)
    if target.scheme not in ("http", "https") or target.hostname != home.hostname:
        log.info("%s: next page %r is on another host; not followed", feed, href[:100])
        return None
    return target.geturl()


def _all_new(entries: list[Any], state: FeedCursor, feed: str) -> bool:
    keys = []
    for entry in entries:
        try:
            keys.append(_digest(entry_key(entry, feed)))
        except (AttributeError, TypeError):
            continue
    return bool(keys) and not any(key in state.seen for key in keys)
