"""The watchdog: a feed that has not polled successfully for N of its intervals is reported once through the
channels ("x:elonmusk failing since ..., last error ..."), and once more when it comes back."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.timeutil import iso, utcnow
from storage.store import Store

log = logging.getLogger("ringside.watchdog")


def watch(
    store: Store,
    channels: Sequence[str],
    source: str,
    feed: str,
    every: float,
    after: int,
    error: str | None,
) -> None:
    """Update the feed's watchdog state after a poll (`error` None: it succeeded); queue a notice if due."""
    if after <= 0:
        return
    since, alerted = store.watchdog_state(source, feed)
    now = utcnow()
    if error is None:
        if alerted:
            log.info("%s:%s recovered (failing since %s)", source, feed, iso(since) if since else "?")
            store.queue_notice(channels, notice("recovered", source, feed, since or now, None))
        if since or alerted:
            store.set_watchdog_state(source, feed, None, False)
        return
    since = since or now
    if not alerted and now - since >= timedelta(seconds=every * after):
        log.error("%s:%s failing since %s: %s", source, feed, iso(since), error)
        store.queue_notice(channels, notice("failing", source, feed, since, error))
        alerted = True
    store.set_watchdog_state(source, feed, since, alerted)


def notice(
    state: str, source: str, feed: str, since: datetime, error: str | None, text: str | None = None
) -> dict:
    """The payload of a watchdog message (a feed failing or recovered; `text` for other notices, such as a
    paused channel's); its key is stable for one failure episode."""
    key = hashlib.sha256(f"{source}\x00{feed}\x00{iso(since)}\x00{state}".encode()).hexdigest()[:32]
    when = since.strftime("%Y-%m-%d %H:%M UTC")
    if text is None and state == "failing":
        text = f"{source}:{feed} failing since {when}, last error: {error}"
    elif text is None:
        text = f"{source}:{feed} is polling again (it had been failing since {when})"
    return {
        "kind": "watchdog",
        "key": f"rs1w-{key}",
        "state": state,
        "source": source,
        "feed": feed,
        "since": iso(since),
        "last_error": error,
        "text": text,
    }
