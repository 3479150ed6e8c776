"""The two steps of the service: poll one feed (fetch -> match -> store) and deliver one channel's outbox.

Both are plain methods, called by the scheduler in `run` and directly by `once` and the tests. Neither lets
an exception out: a failing feed or channel is logged and recorded, and the others go on.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bot.alerts import alert_payload
from bot.matcher import Matcher
from bot.models import Fetch, Hit
from bot.notifiers import DeliveryError, Notifier
from bot.sources import RateLimited, Source, SourceError
from bot.timeutil import utcnow
from storage.store import PollSaved, Store

log = logging.getLogger("ringside.pipeline")

# Categories stored as hits but never alerted on their own: exchange detection links them to a challenge.
SILENT_CATEGORIES = frozenset({"response"})
RETRY_BASE_SECONDS = 15.0
RETRY_MAX_SECONDS = 3600.0


@dataclass
class DeliveryCount:
    sent: int = 0
    failed: int = 0
    dead: int = 0


@dataclass
class Pipeline:
    store: Store
    matcher: Matcher
    sources: dict[str, Source]
    notifiers: Sequence[Notifier]
    max_attempts: int = 8
    _channel_locks: dict[str, threading.Lock] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._channel_locks = {n.name: threading.Lock() for n in self.notifiers}

    def feeds(self) -> Iterable[tuple[str, str]]:
        for name, source in self.sources.items():
            for feed in source.feeds():
                yield name, feed

    # -- poll ----------------------------------------------------------------------------------------

    def poll(self, source_name: str, feed: str) -> PollSaved | None:
        """Fetch, match and store one feed. Returns what was saved, or None when skipped or failed."""
        source = self.sources[source_name]
        where = f"{source_name}:{feed}"
        state = self.store.feed_state(source_name, feed)
        started = utcnow()
        if state.paused_until and started < state.paused_until:
            log.debug("%s: rate limited until %s; skipped", where, state.paused_until)
            return None
        try:
            fetch = source.fetch(feed, state.cursor)
            saved = self.store.save_poll(
                source_name, feed, started, fetch, self._hits(fetch), [n.name for n in self.notifiers]
            )
        except RateLimited as error:
            log.warning("%s: %s", where, error)
            self.store.save_failed_poll(source_name, feed, started, str(error), paused_until=error.reset_at)
            return None
        except SourceError as error:
            log.warning("%s: poll failed: %s", where, error)
            self.store.save_failed_poll(source_name, feed, started, str(error))
            return None
        except Exception as error:  # a bug or a database fault: keep the service and the other feeds alive
            log.exception("%s: poll failed unexpectedly", where)
            self._record_failure(source_name, feed, started, f"{type(error).__name__}: {error}")
            return None
        level = logging.INFO if saved.new_posts or saved.new_hits else logging.DEBUG
        log.log(
            level,
            "%s: fetched %d, new %d, hits %d, alerts %d",
            where,
            saved.fetched,
            saved.new_posts,
            saved.new_hits,
            saved.alerts,
        )
        return saved

    def _hits(self, fetch: Fetch) -> list[tuple[Hit, dict[str, Any] | None]]:
        return [
            (hit, None if hit.category in SILENT_CATEGORIES else alert_payload(post, hit))
            for post in fetch.posts
            for hit in self.matcher.match(post)
        ]

    def _record_failure(self, source_name: str, feed: str, started: Any, error: str) -> None:
        try:
            self.store.save_failed_poll(source_name, feed, started, error)
        except Exception:
            log.exception("%s:%s: could not record the failed poll", source_name, feed)

    # -- deliver -------------------------------------------------------------------------------------

    def deliver_all(self) -> dict[str, DeliveryCount]:
        return {notifier.name: self.deliver(notifier) for notifier in self.notifiers}

    def deliver(self, notifier: Notifier) -> DeliveryCount:
        """Send the channel's due alerts in creation order, until none is due or one fails.

        An alert waiting for its retry holds back the ones after it, so a channel never shows alerts out of
        order. Only one delivery per channel runs at a time; a second caller returns at once.
        """
        count = DeliveryCount()
        lock = self._channel_locks[notifier.name]
        if not lock.acquire(blocking=False):
            return count
        try:
            while self._deliver_batch(notifier, count):
                pass
        except Exception:
            log.exception("%s: delivery failed unexpectedly", notifier.name)
        finally:
            lock.release()
        return count

    def _deliver_batch(self, notifier: Notifier, count: DeliveryCount) -> bool:
        """Deliver up to one batch; True when it went through the whole batch and more may be due."""
        batch = self.store.pending_alerts(notifier.name, limit=100)
        for alert in batch:
            if alert.next_attempt_at > utcnow():
                return False
            try:
                notifier.send(alert)
            except Exception as error:
                if self._failed(notifier.name, alert, error, count):
                    continue  # a dead alert no longer holds the line
                return False
            self.store.mark_sent(alert.id)
            count.sent += 1
        return len(batch) == 100

    def _failed(self, channel: str, alert: Any, error: Exception, count: DeliveryCount) -> bool:
        """Record a failed attempt; True when the alert is now dead."""
        if not isinstance(error, DeliveryError):
            log.exception("%s: channel raised an unexpected error", channel)
            error = DeliveryError(f"{type(error).__name__}: {error}")
        attempts = alert.attempts + 1
        if not error.retry or attempts >= self.max_attempts:
            log.error("%s: alert %s is dead after %d attempt(s): %s", channel, alert.key, attempts, error)
            self.store.mark_failed(alert.id, str(error), retry_at=None)
            count.dead += 1
            return True
        delay = retry_delay(attempts, error.retry_after)
        log.warning(
            "%s: alert %s failed (attempt %d), retrying in %.0fs: %s",
            channel,
            alert.key,
            attempts,
            delay,
            error,
        )
        self.store.mark_failed(alert.id, str(error), retry_at=utcnow() + timedelta(seconds=delay))
        count.failed += 1
        return False


def retry_delay(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never sooner than the channel's own Retry-After."""
    ceiling = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempts - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)
