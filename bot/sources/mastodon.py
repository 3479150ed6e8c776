"""Mastodon through Mastodon.py, one client per instance, reading each account on its own instance.

Quirks kept here: an account is written `user@instance` and looked up once (its id is stored by the pipeline);
a status's local id differs from one instance to the next, so a post's id is "instance/id" as the account's
own instance numbers it, and reply_to / quote_of are written the same way (they compare with posts of the same
instance; across instances, exchanges still link through mentions, which a Mastodon reply always carries).
`content` is HTML and becomes plain text, with the content warning first. An edit keeps its status id, so
every poll reads the newest page again and keeps, below the cursor, only statuses that say they were edited:
the store makes a new version of the same post. A 429 pauses only that feed until the instance's reset time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import mastodon
from mastodon import Mastodon

from bot.models import Fetch, Post, Rejected
from bot.sources import RateLimited, SourceError, post_or_rejected, reset_from_epoch
from bot.sources.html_text import html_to_text
from bot.timeutil import iso, parse_datetime
from config import SourceConfig
from config.secrets import Secret

log = logging.getLogger("ringside.mastodon")

PAGE_SIZE = 40  # the most a Mastodon timeline page holds
MAX_PAGES = 20  # 800 statuses in one poll: more than anyone posts between two polls
RATE_WINDOW = timedelta(minutes=5)  # Mastodon's rate-limit window, when the instance names no reset time
USER_AGENT = "ringside (+https://github.com/ringside)"
# The "RE: link" paragraph Mastodon adds to a quote for old clients: the quote is in quote_of, not the text.
QUOTE_FALLBACK = ("quote-inline",)


class NotFound(SourceError):
    """The instance answered 404: no such account (or status)."""


class MastodonSource:
    platform = "mastodon"

    def __init__(
        self,
        name: str,
        clients: dict[str, Mastodon],
        accounts: Iterable[str],
        first_poll_limit: int = 20,
        known_ids: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.clients = clients
        self.accounts = [a.lower() for a in accounts]
        self.first_poll_limit = first_poll_limit
        self.ids = {k.lower(): v for k, v in (known_ids or {}).items()}

    @classmethod
    def from_config(cls, config: SourceConfig, known_ids: dict[str, str]) -> MastodonSource:
        instances = {instance_of(account) for account in config.options["accounts"]}
        clients = {
            instance: make_client(
                instance, config.secrets.get(f"token:{instance}"), config.options["timeout"]
            )
            for instance in sorted(instances)
        }
        return cls(
            config.name,
            clients,
            config.options["accounts"],
            first_poll_limit=config.options["first_poll_limit"],
            known_ids=known_ids,
        )

    def feeds(self) -> list[str]:
        return list(self.accounts)

    def fetch(self, feed: str, cursor: str | None) -> Fetch:
        instance = instance_of(feed)
        client = self.clients[instance]
        learned = self._resolve(client, feed)
        pages = self._pages(client, instance, self.ids[feed], cursor)
        return self._to_fetch(pages, instance, feed, cursor, learned)

    def _resolve(self, client: Mastodon, account: str) -> tuple[tuple[str, str, str], ...]:
        """Look up the account's id on its instance, once; what was learned, for the pipeline to keep."""
        if account in self.ids:
            return ()
        try:
            found = _call(client, instance_of(account), client.account_lookup, acct=account.partition("@")[0])
        except NotFound:
            raise SourceError(
                f"no Mastodon account named @{account} (check the name in the settings)"
            ) from None
        if not isinstance(found, dict) or not found.get("id"):
            raise SourceError(f"{instance_of(account)} answered the look-up of @{account} without an id")
        self.ids[account] = str(found["id"])
        return (("mastodon", account, self.ids[account]),)

    def _pages(self, client: Mastodon, instance: str, account_id: str, cursor: str | None) -> list[Any]:
        """Statuses from the newest back to the cursor (the newest page is always read whole, so that recent
        edits are seen); without a cursor, just the first-poll limit."""
        wanted = self.first_poll_limit if cursor is None else None
        statuses: list[Any] = []
        max_id = None
        for _ in range(MAX_PAGES):
            size = PAGE_SIZE if wanted is None else min(PAGE_SIZE, wanted - len(statuses))
            page = _call(client, instance, client.account_statuses, id=account_id, max_id=max_id, limit=size)
            # Mastodon.py turns a JSON object where a list belongs into the list of its keys: not statuses.
            if not isinstance(page, list) or (page and not any(isinstance(s, dict) for s in page)):
                raise SourceError(f"{instance}: the instance answered something else than a list of statuses")
            statuses += page
            oldest = min((_status_id(s) for s in page), key=id_order, default="")
            # No "next" link (Mastodon.py keeps it as _pagination_next): the account has nothing older.
            more = getattr(page, "_pagination_next", None)
            if not more or not oldest or (wanted is not None and len(statuses) >= wanted):
                return statuses
            if cursor is not None and id_order(oldest) <= id_order(cursor):
                return statuses
            max_id = oldest
        log.warning(
            "%s: more than %d statuses since the last poll; older ones were skipped",
            instance,
            MAX_PAGES * PAGE_SIZE,
        )
        return statuses

    def _to_fetch(
        self, statuses: list[Any], instance: str, feed: str, cursor: str | None, learned: tuple
    ) -> Fetch:
        posts: dict[str, Post] = {}
        rejected: list[Rejected] = []
        newest = cursor or ""
        for status in statuses:
            status_id = _status_id(status)
            if cursor and status_id and id_order(status_id) <= id_order(cursor) and not _edited(status):
                continue  # read again only to see edits
            newest = max(newest, status_id, key=id_order)
            post = post_or_rejected(status, lambda s: post_from_status(s, instance, feed))
            if isinstance(post, Rejected):
                rejected.append(post)
            else:
                posts.setdefault(post.key, post)
        ordered = sorted(posts.values(), key=lambda p: id_order(p.id.partition("/")[2]))
        return Fetch(
            posts=tuple(ordered[-self.first_poll_limit :] if cursor is None else ordered),
            cursor=newest or None,
            read=len(statuses),
            accounts=learned,
            rejected=tuple(rejected),
        )


def make_client(instance: str, token: Secret | None, timeout: float) -> Mastodon:
    """A client of one instance that never sleeps on a rate limit ("throw") and gives up after `timeout`."""
    return Mastodon(
        api_base_url=f"https://{instance}",
        access_token=token.reveal() if token is not None else None,
        ratelimit_method="throw",
        request_timeout=timeout,
        version_check_mode="none",
        user_agent=USER_AGENT,
    )


def instance_of(account: str) -> str:
    """The instance of a `user@instance` account, lower case."""
    return account.rpartition("@")[2].lower()


def id_order(status_id: str) -> tuple[int, str]:
    """Mastodon ids are numbers written as strings, of growing length: ordered by length, then text."""
    return len(status_id), status_id


def post_from_status(status: dict[str, Any], instance: str, feed: str) -> Post:
    """A Post from one Mastodon Status as `instance` serves it; `feed` is the account polled."""
    original = status.get("reblog")
    shown = original if isinstance(original, dict) else status
    quoted = _quoted_id(shown)
    kind = _kind(status, shown is not status, quoted)
    referenced = original["id"] if kind == "repost" else quoted  # a boost refers to what it boosts
    text = status_text(shown)
    if kind == "repost":
        text = f"RT @{_author(shown, instance, feed)}: {text}"
    edited = status.get("edited_at")
    return Post(
        platform="mastodon",
        id=_local(instance, _required_id(status)),
        version_id=_when(edited, "edited_at").isoformat() if edited else None,
        author=_author(status, instance, feed),
        author_id=str((status.get("account") or {}).get("id") or "") or None,
        text=text,
        url=shown.get("url") or status.get("url") or shown.get("uri"),
        created_at=_when(status["created_at"], "created_at"),
        lang=shown.get("language"),
        kind=kind,
        reply_to=_local(instance, status["in_reply_to_id"]) if status.get("in_reply_to_id") else None,
        quote_of=_local(instance, referenced) if referenced else None,
        mentions=_mentions(status, shown, instance, feed),
        raw=dict(status),
    )


def _kind(status: dict[str, Any], reblog: bool, quoted: str | None) -> str:
    """A boost is a repost; then a quote (even when it also replies), a reply, or a plain post."""
    if reblog:
        return "repost"
    if quoted:
        return "quote"
    return "reply" if status.get("in_reply_to_id") else "post"


def status_text(status: dict[str, Any]) -> str:
    """The plain text of a status: its content warning, a blank line, then its content as text."""
    body = html_to_text(status.get("content") or "", skip_classes=QUOTE_FALLBACK)
    warning = (status.get("spoiler_text") or "").strip()
    return f"{warning}\n\n{body}" if warning and body else warning or body


def _quoted_id(status: dict[str, Any]) -> str | None:
    """The id of the status this one quotes: Mastodon 4.4+ `quote` (a Quote, or a ShallowQuote with only an
    id), Fedibird's `quote` (the quoted Status itself) or Pleroma's `pleroma.quote_id`; None when none."""
    quote = status.get("quote")
    if isinstance(quote, dict):
        quoted = quote.get("quoted_status")
        found = (
            quoted.get("id") if isinstance(quoted, dict) else quote.get("quoted_status_id") or quote.get("id")
        )
        if found:
            return str(found)
    pleroma = status.get("pleroma")
    quote_id = pleroma.get("quote_id") if isinstance(pleroma, dict) else None
    return str(quote_id) if quote_id else None


def _author(status: dict[str, Any], instance: str, feed: str) -> str:
    """`user@instance` of the status's account (a local account's acct has no instance); the feed's account
    when the status names none."""
    acct = (status.get("account") or {}).get("acct")
    return _full_acct(acct, instance) if acct else feed


def _full_acct(acct: str, instance: str) -> str:
    return acct if "@" in acct else f"{acct}@{instance}"


def _mentions(status: dict[str, Any], shown: dict[str, Any], instance: str, feed: str) -> tuple[str, ...]:
    """The accounts a post mentions, as `user@instance`: a repost's reposted author first, then the rest."""
    names = [_author(shown, instance, feed)] if shown is not status else []
    for mention in shown.get("mentions") or []:
        if isinstance(mention, dict) and mention.get("acct"):
            names.append(_full_acct(mention["acct"], instance))
    return tuple(dict.fromkeys(names))


def _local(instance: str, status_id: Any) -> str:
    return f"{instance}/{status_id}"


def _required_id(status: dict[str, Any]) -> str:
    value = status["id"]
    if not isinstance(value, str | int) or isinstance(value, bool) or not str(value).strip():
        raise ValueError(f"field 'id' must be a status id, got {value!r}")
    return str(value)


def _when(value: Any, field: str) -> datetime:
    """A time as Mastodon.py gives it (already a datetime) or as the JSON has it (an ISO string)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"field {field!r} must be a time, got {value!r}")
    return parse_datetime(value)


def _edited(status: Any) -> bool:
    return isinstance(status, dict) and bool(status.get("edited_at"))


def _status_id(status: Any) -> str:
    """A status's id for the cursor; "" when it has none (it cannot move the cursor)."""
    value = status.get("id") if isinstance(status, dict) else None
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""


def _call(client: Mastodon, where: str, endpoint: Any, **args: Any) -> Any:
    """Call the instance and turn its failures into SourceError messages that never carry the token."""
    args = {k: v for k, v in args.items() if v is not None}
    try:
        return endpoint(**args)
    except mastodon.MastodonRatelimitError:
        reset_at = _reset_time(client)
        raise RateLimited(
            f"{where}: Mastodon rate limit reached (429); paused until {iso(reset_at)}", reset_at
        ) from None
    except mastodon.MastodonError as error:
        raise _source_error(where, error) from None


def _source_error(where: str, error: Exception) -> SourceError:
    status = error.args[1] if len(error.args) > 1 and isinstance(error.args[1], int) else None
    detail = error.args[3] if len(error.args) > 3 and error.args[3] else None
    if isinstance(error, mastodon.MastodonUnauthorizedError):
        return SourceError(
            f"{where}: the instance refused the request (401 Unauthorized); check the access token named "
            "in `tokens`, or add one if the instance requires it"
        )
    if isinstance(error, mastodon.MastodonNotFoundError):
        return NotFound(f"{where}: not found (404)")
    if isinstance(error, mastodon.MastodonServerError):
        return SourceError(f"{where}: server error ({status}); retrying next poll")
    if isinstance(error, mastodon.MastodonNetworkError):
        return SourceError(f"{where}: cannot reach the instance (network error or timeout)")
    if status is not None:
        return SourceError(
            f"{where}: the instance answered {status}: {detail or error.args[2] or 'no detail'}"
        )
    return SourceError(f"{where}: the instance answered a body that is not a Mastodon API answer")


def _reset_time(client: Mastodon) -> datetime:
    """The instance's reset moment (X-RateLimit-Reset, which Mastodon.py has read), or one rate-limit window
    from now when it did not say."""
    return reset_from_epoch(getattr(client, "ratelimit_reset", None), RATE_WINDOW)
