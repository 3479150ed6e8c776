"""Instagram through the Instagram Graph API's business discovery, on the operator's professional account.

Quirks kept here: every watched account is read through the operator's own account (`ig_user_id`) as
`business_discovery.username(NAME){media{...}}`, so only Business and Creator accounts can be watched, and
only their media (captions, times, permalinks; no replies, quotes or reposts exist there). Media come newest
first and business discovery has no `since`: a poll pages with the media `after` cursor until it reaches the
newest media it saw before, which its cursor holds (time and the ids at that time). The first poll takes one
page of `first_poll_limit`. A caption edited after a media was stored is not read again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bot.models import Fetch, Post
from bot.sources import CLOCK_SLACK, SourceError, posts_in_time_order
from bot.sources.graph import GraphClient, GraphRefusal, mentions_in, paging_after
from bot.timeutil import iso, parse_datetime, utcnow
from config import SourceConfig
from config.sources import INSTAGRAM_PERMISSIONS

log = logging.getLogger("ringside.instagram")

API = "https://graph.facebook.com"
MEDIA_FIELDS = "caption,timestamp,permalink,id,media_type,username"
PAGE_SIZE = 50
MAX_PAGES = 20  # 1,000 media a poll
NO_SUCH_ACCOUNT = 110  # Graph's "invalid user": no Business or Creator account has that username


class InstagramSource:
    platform = "instagram"

    def __init__(
        self,
        name: str,
        client: GraphClient,
        token: str,
        ig_user_id: str,
        accounts: Iterable[str],
        first_poll_limit: int = 20,
    ) -> None:
        self.name = name
        self.client = client
        self.token = token
        self.ig_user_id = ig_user_id
        self.accounts = [a.lower() for a in accounts]
        self.first_poll_limit = first_poll_limit
        self.needs = " and ".join(INSTAGRAM_PERMISSIONS)

    @classmethod
    def from_config(cls, config: SourceConfig) -> InstagramSource:
        secret = config.secrets["token"]
        options = config.options
        client = GraphClient(
            f"{API}/{options['api_version']}", "Instagram", secret.env_name, options["timeout"], None
        )
        return cls(
            config.name,
            client,
            secret.reveal(),
            options["ig_user_id"],
            options["accounts"],
            first_poll_limit=options["first_poll_limit"],
        )

    def feeds(self) -> list[str]:
        return list(self.accounts)

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        newest, seen = _load_cursor(cursor)
        if newest is None:
            items = _media(self._page(feed, None, self.first_poll_limit))[0]
        else:
            items = self._new_media(feed, newest, seen)
        return self._to_fetch(items, feed, cursor, newest, seen)

    def probe(self, feed: str) -> str:
        """Ask Instagram once for one media of `feed`; a line saying what came back, or a SourceError naming
        the permissions a refusal needs."""
        items, _ = _media(self._page(feed, None, 1))
        return f"ok: answered ({len(items)} media in a one-media sample); needs {self.needs}"

    def _new_media(self, feed: str, newest: datetime, seen: set[str]) -> list[Any]:
        """Media pages, newest first, until one reaches media at or before `newest`."""
        items: list[Any] = []
        after = None
        for _ in range(MAX_PAGES):
            page_items, after = _media(self._page(feed, after, PAGE_SIZE))
            items.extend(page_items)
            if after is None or not page_items or any(_time(i) and _time(i) <= newest for i in page_items):
                break
        else:
            log.warning(
                "%s: more than %d media since the last poll; older ones in this gap are not fetched",
                feed,
                len(items),
            )
        return items

    def _page(self, feed: str, after: str | None, limit: int) -> dict[str, Any]:
        media = f"media.after({after}).limit({limit})" if after else f"media.limit({limit})"
        fields = f"business_discovery.username({feed}){{username,{media}{{{MEDIA_FIELDS}}}}}"
        try:
            answer = self.client.get(self.ig_user_id, {"fields": fields}, self.token, self.needs)
        except GraphRefusal as error:
            if error.code == NO_SUCH_ACCOUNT:
                raise SourceError(
                    f"no Instagram Business or Creator account named @{feed} (personal accounts cannot be "
                    f"watched): {error}"
                ) from None
            raise
        discovery = answer.get("business_discovery")
        if not isinstance(discovery, dict):
            raise SourceError(f"Instagram sent no business_discovery for @{feed}")
        return discovery

    def _to_fetch(
        self, items: list[Any], feed: str, cursor: str | None, newest: datetime | None, seen: set[str]
    ) -> Fetch:
        fresh = [item for item in items if newest is None or not _is_old(item, newest, seen)]
        posts, rejected = posts_in_time_order(
            fresh,
            lambda media: post_from_media(media, feed),
            keep_newest=self.first_poll_limit if cursor is None else None,
        )
        cursor = _next_cursor(items, newest, seen) or cursor
        return Fetch(posts=posts, cursor=cursor, read=len(items), rejected=rejected)


def post_from_media(media: dict[str, Any], feed: str) -> Post:
    """A Post from one Instagram media object seen through business discovery: its caption is the text."""
    if not isinstance(media.get("id"), str) or not media["id"]:
        raise ValueError(f"field 'id' must be a non-empty string, got {media.get('id')!r}")
    caption = media.get("caption") or ""
    if not isinstance(caption, str):
        raise ValueError(f"field 'caption' must be a string, got {type(caption).__name__}")
    return Post(
        platform="instagram",
        id=media["id"],
        author=media.get("username") or feed,
        text=caption,
        url=media.get("permalink"),
        created_at=parse_datetime(media["timestamp"]),
        mentions=mentions_in(caption),
        raw=media,
    )


def _media(discovery: dict[str, Any]) -> tuple[list[Any], str | None]:
    """One page of media and the cursor after it."""
    media = discovery.get("media") or {"data": []}  # an account with no media has no `media` at all
    if not isinstance(media, dict) or not isinstance(media.get("data"), list):
        raise SourceError("Instagram sent media without its 'data' list")
    return media["data"], paging_after(media, needs_next=False)


def _time(item: Any) -> datetime | None:
    try:
        return parse_datetime(item["timestamp"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _is_old(item: Any, newest: datetime, seen: set[str]) -> bool:
    moment = _time(item)
    if moment is None:
        return False  # no time: new or not, it goes to the quarantine rather than vanishing
    return moment < newest or (moment == newest and item.get("id") in seen)


def _next_cursor(items: list[Any], newest: datetime | None, seen: set[str]) -> str | None:
    """The newest time among `items` and the cursor's, with the ids seen at that time."""
    # A time in the future is quarantined; a cursor moved there would hide every media until then.
    latest = utcnow() + CLOCK_SLACK
    times = [(t, i.get("id")) for i in items if (t := _time(i)) is not None and t <= latest]
    top = max([t for t, _ in times] + ([newest] if newest else []), default=None)
    if top is None:
        return None
    ids = {str(i) for t, i in times if t == top and i} | (seen if top == newest else set())
    return json.dumps({"newest": iso(top), "ids": sorted(ids)})


def _load_cursor(cursor: str | None) -> tuple[datetime | None, set[str]]:
    if not cursor:
        return None, set()
    try:
        loaded = json.loads(cursor)
        return parse_datetime(loaded["newest"]), {str(i) for i in loaded["ids"]}
    except (ValueError, KeyError, TypeError, AttributeError):
        # Unreadable, it would stop the feed for good: start again as a first poll, as RSS does.
        log.warning("the saved cursor %r is not an Instagram cursor; polling as the first time", cursor[:80])
        return None, set()
