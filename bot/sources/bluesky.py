"""Bluesky through the AT Protocol SDK (atproto): no account needed. Two modes in one source type.

Poll (`mode = "poll"`): each account is a feed, read with app.bsky.feed.getAuthorFeed on the public AppView.
Handles are resolved to DIDs once (and stored by the pipeline). The feed has no `since`: its cursor only pages
back, so a poll pages back to a margin (OVERLAP) before the newest item it saw before, and saves that
item's sort time and uri (JSON) as the feed's cursor. The AppView sorts a feed by min(indexedAt, createdAt),
so a post written on a slow clock is filed below posts indexed before it: the margin fetches it, and the
store's dedup by key absorbs the items read twice. The first poll takes only `first_poll_limit` posts.
A 429 pauses the feed until the `ratelimit-reset` the AppView sends.

Jetstream (`mode = "jetstream"`): one feed for every account, streamed; see bot/sources/jetstream.py.

A post's id is its at:// URI (at://DID/app.bsky.feed.post/RKEY): unique across the network, and what replies
and quotes refer to, so reply_to and quote_of need no translation. A repost's id is its repost record's URI.
An edit (a record updated in place) is a new version of the same key; its version id is the record's CID.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from atproto_client import Client, models
from atproto_client.exceptions import (
    BadRequestError,
    NetworkError,
    RateLimitExceededError,
    RequestErrorBase,
    UnauthorizedError,
)
from atproto_client.request import Request

from bot.models import Fetch, Post, Rejected
from bot.sources import RateLimited, SourceError, post_or_rejected, sanitised
from bot.timeutil import iso, parse_datetime, utcnow
from config import SourceConfig
from config.sources import BLUESKY_HANDLE

if TYPE_CHECKING:
    from bot.sources.jetstream import JetstreamSource

log = logging.getLogger("ringside.bluesky")

PUBLIC_APPVIEW = "https://public.api.bsky.app"
LOGIN_SERVICE = "https://bsky.social"
POST_COLLECTION = "app.bsky.feed.post"
PAGE_SIZE = 100  # getAuthorFeed's largest page
MAX_PAGES = 20  # a poll reads at most 2,000 items back; older ones in a longer gap are not fetched
# How far before the saved item a poll keeps reading: posts whose createdAt is earlier than their indexedAt
# (a slow phone clock, a bridged or scheduled post) sort below items indexed before them.
OVERLAP = timedelta(minutes=15)
SANE_RESET = timedelta(days=366)  # a ratelimit-reset further from now than this is not a time but a mistake
PROFILES_PER_CALL = 25  # getProfiles' largest batch
REPOST = "app.bsky.feed.defs#reasonRepost"
MENTION = "app.bsky.richtext.facet#mention"
QUOTE_EMBEDS = ("app.bsky.embed.record", "app.bsky.embed.recordWithMedia")


class BlueskySource:
    """Posts of Bluesky accounts, by polling each author feed or from one Jetstream connection."""

    platform = "bluesky"

    def __init__(
        self,
        name: str,
        client: Client,
        accounts: Iterable[str],
        first_poll_limit: int = 20,
        known_dids: dict[str, str] | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.accounts = [a.lower() for a in accounts]
        self.first_poll_limit = first_poll_limit
        self.dids = {k.lower(): v for k, v in (known_dids or {}).items()}
        # DIDs resolved but not yet handed back in a Fetch (the poll that resolved them may have failed).
        self._unsaved: dict[str, str] = {}
        self._login = login
        self._logged_in = False

    @classmethod
    def from_config(cls, config: SourceConfig, known_dids: dict[str, str]) -> BlueskySource | JetstreamSource:
        options = config.options
        login = _login_of(config)
        base = options["api_url"] if login is None else LOGIN_SERVICE
        client = Client(base_url=base, request=Request(timeout=options["timeout"]))
        poller = cls(
            config.name,
            client,
            options["accounts"],
            first_poll_limit=options["first_poll_limit"],
            known_dids=known_dids,
            login=login,
        )
        if options["mode"] == "jetstream":
            from bot.sources.jetstream import JetstreamSource

            return JetstreamSource(poller, options["jetstream_url"], timeout=options["timeout"])
        return poller

    def feeds(self) -> list[str]:
        return list(self.accounts)

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        self.sign_in()
        self.resolve([feed])
        seen = FeedCursor.parse(cursor)
        items, read = self._items_since(self.dids[feed], seen)
        return self._to_fetch(items, seen, cursor, read, self.take_learned())

    # -- handles and DIDs ------------------------------------------------------------------------------

    def resolve(self, handles: Iterable[str]) -> None:
        """Look up the DIDs of these accounts (and of every other account not yet known), 25 a call.

        Raises SourceError naming an account Bluesky does not know."""
        wanted = list(handles)
        missing = self.resolve_known(wanted)
        if missing:
            raise SourceError(f"no Bluesky account named @{missing[0]} (check the name in the settings)")

    def resolve_known(self, handles: list[str]) -> list[str]:
        """Look up the DIDs not yet known, 25 a call; returns the handles Bluesky does not know."""
        wanted = handles
        if all(h in self.dids for h in wanted):
            return []
        unknown = [a for a in dict.fromkeys([*wanted, *self.accounts]) if a not in self.dids]
        for start in range(0, len(unknown), PROFILES_PER_CALL):
            params = models.AppBskyActorGetProfiles.Params(actors=unknown[start : start + PROFILES_PER_CALL])
            answer = self._query("app.bsky.actor.getProfiles", params)
            for profile in answer.get("profiles") or []:
                if isinstance(profile, dict) and profile.get("handle") and profile.get("did"):
                    self.dids[profile["handle"].lower()] = profile["did"]
                    self._unsaved[profile["handle"].lower()] = profile["did"]
        return [h for h in wanted if h not in self.dids]

    def take_learned(self) -> tuple[tuple[str, str, str], ...]:
        """The (platform, handle, DID) triples resolved since the last call, for the pipeline to store."""
        learned = tuple(("bluesky", handle, did) for handle, did in self._unsaved.items())
        self._unsaved.clear()
        return learned

    # -- polling -------------------------------------------------------------------------------------

    def _items_since(self, did: str, seen: FeedCursor | None) -> tuple[list[dict], int]:
        """Feed items newer than `seen`, newest first; without a cursor only the first-poll limit."""
        items: list[dict] = []
        read = 0
        page_cursor = None
        for _ in range(MAX_PAGES):
            wanted = PAGE_SIZE if seen else max(1, min(PAGE_SIZE, self.first_poll_limit - len(items)))
            params = models.AppBskyFeedGetAuthorFeed.Params(actor=did, limit=wanted, cursor=page_cursor)
            page = self._query("app.bsky.feed.getAuthorFeed", params)
            feed = page.get("feed")
            if not isinstance(feed, list):
                raise SourceError("Bluesky answered getAuthorFeed without a 'feed' list (malformed answer)")
            read += len(feed)
            caught_up = False
            for item in feed:
                if seen and seen.reached(item):
                    caught_up = True
                    break
                items.append(item)
            page_cursor = page.get("cursor")
            if caught_up or not page_cursor or not feed or (not seen and len(items) >= self.first_poll_limit):
                break
        else:
            if seen:
                log.warning(
                    "bluesky: %s: stopped after %d pages (%d items) without reaching the saved cursor; "
                    "older posts in this gap are not fetched",
                    did,
                    MAX_PAGES,
                    read,
                )
        return items, read

    def _to_fetch(
        self, items: list[dict], seen: FeedCursor | None, saved: str | None, read: int, learned: tuple
    ) -> Fetch:
        known = {did: handle for handle, did in self.dids.items()}
        handles = sanitised(known | _handles_in(items))
        convert = partial(post_from_feed_item, handles=handles)
        posts: dict[str, Post] = {}
        rejected: list[Rejected] = []
        for item in items if seen else items[: self.first_poll_limit]:
            post = post_or_rejected(item, convert)
            if isinstance(post, Rejected):
                rejected.append(post)
            elif post.key not in posts:
                posts[post.key] = post
        newest = next((FeedCursor.of(item) for item in items if FeedCursor.of(item)), None)
        # Items re-read in the overlap are older than the saved one: the cursor never moves back.
        moved = newest is not None and (seen is None or newest.at > seen.at)
        cursor = newest.dump() if moved and newest else saved
        return Fetch(
            posts=tuple(reversed(posts.values())),
            cursor=cursor,
            read=read,
            accounts=learned,
            rejected=tuple(rejected),
        )

    # -- calls ---------------------------------------------------------------------------------------

    def sign_in(self) -> None:
        """Log in with the app password, once, when one is configured (higher rate limits)."""
        if self._login is None or self._logged_in:
            return
        handle, password = self._login
        try:
            self.client.login(handle, password, fetch_bsky_profile=False)
        except RequestErrorBase as error:
            raise _source_error(error, "BLUESKY_HANDLE and BLUESKY_APP_PASSWORD") from None
        self._logged_in = True

    def _query(self, nsid: str, params: Any, again: bool = True) -> dict[str, Any]:
        """Call the AppView and turn its failures into SourceError messages that never carry a secret.

        A session the server no longer accepts (revoked, expired) is replaced by one new login, once."""
        try:
            answer = self.client.invoke_query(nsid, params=params)
        except RequestErrorBase as error:
            if again and self._logged_in and _session_lost(error):
                log.warning("bluesky: the session was refused on %s; logging in again", nsid)
                self._logged_in = False
                self.sign_in()
                return self._query(nsid, params, again=False)
            raise _source_error(error, nsid) from None
        except ValueError:  # a body that says it is JSON and is not
            raise SourceError(f"Bluesky answered {nsid} with a malformed JSON body") from None
        if not isinstance(answer.content, dict):
            raise SourceError(f"Bluesky answered {nsid} with something other than a JSON object")
        return answer.content


class FeedCursor:
    """Where a poll of one author feed stopped: the newest item's sort time (min(indexedAt, createdAt), the
    AppView's sortAt; a repost's own indexedAt) and its uri. Items are served newest by that time first; the
    next poll stops at the first one older than OVERLAP before it."""

    def __init__(self, at: str, uri: str) -> None:
        self.at = at
        self.uri = uri

    @classmethod
    def parse(cls, text: str | None) -> FeedCursor | None:
        if not text:
            return None
        try:
            saved = json.loads(text)
            return cls(iso(parse_datetime(saved["at"])), str(saved["uri"]))
        except (ValueError, KeyError, TypeError):
            raise SourceError(f"saved cursor {text[:80]!r} is not a Bluesky feed cursor") from None

    @classmethod
    def of(cls, item: Any) -> FeedCursor | None:
        """The cursor that stops right after `item`; None for an item without a time or uri."""
        try:
            at = _item_time(item)
            return cls(iso(at), _item_uri(item)) if at else None
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def reached(self, item: Any) -> bool:
        """Whether `item` sorts more than OVERLAP below this cursor, where a poll can stop (an item without
        a time does not)."""
        mark = FeedCursor.of(item)
        if mark is None:
            return False
        return mark.at < iso(parse_datetime(self.at) - OVERLAP)

    def dump(self) -> str:
        return json.dumps({"at": self.at, "uri": self.uri})


def _item_time(item: dict[str, Any]) -> datetime | None:
    """The time the AppView sorts `item` by: a repost's indexedAt, else min(indexedAt, createdAt)."""
    reason = item.get("reason") or {}
    if reason.get("$type") == REPOST:
        stamps = [reason.get("indexedAt")]
    else:
        stamps = [item["post"].get("indexedAt"), (item["post"].get("record") or {}).get("createdAt")]
    times = [parse_datetime(stamp).astimezone(UTC) for stamp in stamps if stamp]
    return min(times) if times else None


def _item_uri(item: dict[str, Any]) -> str:
    reason = item.get("reason") or {}
    if reason.get("$type") == REPOST:
        return reason.get("uri") or f"{item['post']['uri']}#repost-by-{reason['by']['did']}"
    return item["post"]["uri"]


def _handles_in(items: list[dict]) -> dict[str, str]:
    """DID -> handle of every profile these items show (authors, reposters, quoted and replied-to authors):
    what a mention's DID can be named by."""
    handles: dict[str, str] = {}

    def note(profile: Any) -> None:
        if isinstance(profile, dict) and profile.get("did") and profile.get("handle"):
            handles[profile["did"]] = profile["handle"]

    for item in items:
        if not isinstance(item, dict):
            continue
        post = item.get("post") if isinstance(item.get("post"), dict) else {}
        note(post.get("author"))
        note((item.get("reason") or {}).get("by") if isinstance(item.get("reason"), dict) else None)
        reply = item.get("reply") if isinstance(item.get("reply"), dict) else {}
        for end in ("parent", "root"):
            note((reply.get(end) or {}).get("author") if isinstance(reply.get(end), dict) else None)
        note(_quoted_view(post.get("embed")).get("author"))
    return handles


def _quoted_view(embed: Any) -> dict[str, Any]:
    """The quoted record's view in a post view's embed (record#view or recordWithMedia#view), or {}."""
    if not isinstance(embed, dict):
        return {}
    inner = embed.get("record")
    if isinstance(inner, dict) and isinstance(inner.get("record"), dict):  # recordWithMedia#view
        inner = inner["record"]
    return inner if isinstance(inner, dict) else {}


def post_from_feed_item(item: dict[str, Any], handles: dict[str, str]) -> Post:
    """A Post from one getAuthorFeed item (app.bsky.feed.defs#feedViewPost). A repost is the reposter's post
    (kind "repost", quote_of the original) with the original's text."""
    view = item["post"]
    reason = item.get("reason") or {}
    if reason.get("$type") == REPOST:
        by = reason["by"]
        original = post_from_record(
            view["uri"], view["record"], view["author"]["handle"], handles, view.get("cid")
        )
        return Post(
            platform="bluesky",
            id=_item_uri(item),
            author=by["handle"],
            author_id=by["did"],
            text=original.text,
            url=original.url,
            created_at=_item_time(item) or original.created_at,
            lang=original.lang,
            kind="repost",
            quote_of=original.id,
            mentions=(original.author, *(m for m in original.mentions if m != original.author)),
            raw=item,
        )
    return post_from_record(
        view["uri"], view["record"], view["author"]["handle"], handles, view.get("cid"), item
    )


def post_from_record(
    uri: str,
    record: dict[str, Any],
    handle: str,
    handles: dict[str, str],
    cid: str | None = None,
    raw: dict[str, Any] | None = None,
) -> Post:
    """A Post from one app.bsky.feed.post record, as getAuthorFeed and Jetstream both carry it."""
    if not (isinstance(uri, str) and uri.startswith("at://") and uri.count("/") == 4):
        raise ValueError(f"field 'uri' must be an at:// post URI, got {uri!r}")
    if not isinstance(record.get("text"), str):
        raise ValueError("field 'record.text' is missing or not text")
    did, rkey = uri.removeprefix("at://").split("/")[0], uri.rsplit("/", 1)[1]
    parent = ((record.get("reply") or {}).get("parent") or {}).get("uri")
    root = ((record.get("reply") or {}).get("root") or {}).get("uri")
    quoted = _quoted_uri(record.get("embed"))
    langs = record.get("langs") or []
    return Post(
        platform="bluesky",
        id=uri,
        version_id=cid,
        author=handle,
        author_id=did,
        text=record["text"],
        url=f"https://bsky.app/profile/{handle}/post/{rkey}",
        created_at=parse_datetime(record["createdAt"]).astimezone(UTC),
        lang=langs[0] if langs and isinstance(langs[0], str) else None,
        kind="reply" if parent else ("quote" if quoted else "post"),
        reply_to=parent,
        quote_of=quoted,
        mentions=_mentions(record, handles),
        conversation_id=root or (uri if parent else None),
        raw=raw if raw is not None else record,
    )


def _quoted_uri(embed: Any) -> str | None:
    """The URI of the post a record quotes (app.bsky.embed.record, or recordWithMedia around one)."""
    if not isinstance(embed, dict) or embed.get("$type") not in QUOTE_EMBEDS:
        return None
    inner = embed.get("record") or {}
    if embed["$type"] == "app.bsky.embed.recordWithMedia":
        inner = inner.get("record") or {}
    uri = inner.get("uri")
    return uri if isinstance(uri, str) and "/app.bsky.feed.post/" in uri else None


def _mentions(record: dict[str, Any], handles: dict[str, str]) -> tuple[str, ...]:
    """The accounts a record's facets mention: by handle when known (from the answer or the accounts
    watched), else as the text names them (@handle), else by DID."""
    found: list[str] = []
    for facet in record.get("facets") or []:
        for feature in (facet or {}).get("features") or []:
            did = (feature or {}).get("did")
            if (feature or {}).get("$type") == MENTION and isinstance(did, str):
                name = handles.get(did) or _handle_written(record, facet) or did
                if name not in found:
                    found.append(name)
    return tuple(found)


def _handle_written(record: dict[str, Any], facet: Any) -> str | None:
    """The handle a mention facet covers in the text ("@bob.bsky.social"), or None if it is not one.
    Facets index the text's UTF-8 bytes, not its characters."""
    index = facet.get("index") if isinstance(facet, dict) else None
    start, end = (index or {}).get("byteStart"), (index or {}).get("byteEnd")
    if not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start < end:
        return None
    written = record["text"].encode("utf-8", "replace")[start:end].decode("utf-8", "replace")
    handle = written.removeprefix("@").lower()
    return handle if written.startswith("@") and BLUESKY_HANDLE.fullmatch(handle) else None


def _source_error(error: RequestErrorBase, what: str) -> SourceError:
    response = error.response
    status = response.status_code if response is not None else None
    if isinstance(error, RateLimitExceededError):
        reset_at = _sane_reset(error) or utcnow() + timedelta(minutes=5)
        return RateLimited(f"Bluesky rate limit reached (429); paused until {iso(reset_at)}", reset_at)
    if isinstance(error, UnauthorizedError):
        return SourceError(f"Bluesky refused access ({status}) to {what}: {_detail(error)}")
    if isinstance(error, BadRequestError):
        return SourceError(f"Bluesky refused the request (400) to {what}: {_detail(error)}")
    if status is None:
        return SourceError(f"cannot reach Bluesky ({type(error).__name__}) for {what}")
    kind = "server error" if status >= 500 or isinstance(error, NetworkError) else "error"
    return SourceError(f"Bluesky {kind} ({status}) on {what}; retrying next poll")


def _sane_reset(error: RateLimitExceededError) -> datetime | None:
    """The `ratelimit-reset` time, or None when it is absent or not a sane Unix time (milliseconds by
    mistake, years away)."""
    try:
        reset_at = error.reset_at
    except (ValueError, OverflowError, OSError):  # a year beyond 9999
        return None
    if reset_at is None or abs(reset_at - utcnow()) > SANE_RESET:
        return None
    return reset_at


def _session_lost(error: RequestErrorBase) -> bool:
    """Whether the server refused the session itself (revoked or expired), which a new login can fix."""
    if isinstance(error, UnauthorizedError):
        return True
    content = error.response.content if error.response is not None else None
    code = content.get("error") if isinstance(content, dict) else getattr(content, "error", None)
    return code in ("ExpiredToken", "InvalidToken")


def _detail(error: RequestErrorBase) -> str:
    content = error.response.content if error.response is not None else None
    if isinstance(content, dict):
        return str(content.get("message") or content.get("error") or "no detail")[:200]
    return str(getattr(content, "message", None) or getattr(content, "error", None) or "no detail")[:200]


def _login_of(config: SourceConfig) -> tuple[str, str] | None:
    handle, password = config.secrets.get("handle"), config.secrets.get("app_password")
    if handle is None or password is None:
        return None
    return handle.reveal(), password.reveal()
