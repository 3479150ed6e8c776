"""Delivery: each channel's outbox sent in creation order, at least once, with backoff, pacing and digests.

An alert is marked sent only after its channel accepted it, so a crash between the two sends it again with
the same idempotency key. A failure is retried with exponential backoff and jitter, never sooner than the
channel's Retry-After; a permanent refusal, too many attempts or too much time makes it dead (kept, with its
last error, for reports and `alerts retry-dead`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from bot import metrics
from bot.notifiers import DeliveryError, Notifier
from bot.timeutil import utcnow
from config.settings import Delivery
from storage.store import Alert, Store

log = logging.getLogger("ringside.delivery")
BATCH = 100
DIGEST_LIMIT = 200  # alerts in one digest message at most; the rest go in the next one


@dataclass
class DeliveryCount:
    sent: int = 0
    failed: int = 0
    dead: int = 0


class Courier:
    def __init__(
        self,
        store: Store,
        notifiers: Sequence[Notifier],
        delivery: Delivery,
        digests: dict[str, float] | None = None,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.delivery = delivery
        self.digests = digests or {}
        self._locks = {n.name: threading.Lock() for n in notifiers}
        self._last_send: dict[str, float] = {}

    def deliver_all(self) -> dict[str, DeliveryCount]:
        return {notifier.name: self.deliver(notifier) for notifier in self.notifiers}

    def deliver(self, notifier: Notifier) -> DeliveryCount:
        """Send the channel's due alerts in creation order, until none is due or one fails.

        An alert waiting for its retry holds back the ones after it, so a channel never shows alerts out of
        order. Only one delivery per channel runs at a time; a second caller returns at once.
        """
        count = DeliveryCount()
        lock = self._locks[notifier.name]
        if not lock.acquire(blocking=False):
            return count
        try:
            if self.digests.get(notifier.name):
                self._deliver_digest(notifier, self.digests[notifier.name], count)
            else:
                while self._deliver_batch(notifier, count):
                    pass
        except Exception:
            log.exception("%s: delivery failed unexpectedly", notifier.name)
        finally:
            lock.release()
        return count

    def _deliver_batch(self, notifier: Notifier, count: DeliveryCount) -> bool:
        """Deliver up to one batch; True when it went through the whole batch and more may be due."""
        batch = self.store.pending_alerts(notifier.name, limit=BATCH)
        for alert in batch:
            if alert.next_attempt_at > utcnow():
                return False
            if not self._attempt(notifier, alert, [alert.id], count):
                return False
        return len(batch) == BATCH

    def _deliver_digest(self, notifier: Notifier, every: float, count: DeliveryCount) -> None:
        """One message for everything pending, once the oldest pending alert has waited `every` seconds."""
        head = self.store.pending_alerts(notifier.name, limit=1)
        now = utcnow()
        if not head or head[0].next_attempt_at > now:
            return
        if "kind" in head[0].payload:  # a watchdog notice or an exchange turn goes out on its own, at once
            self._attempt(notifier, head[0], [head[0].id], count)
            return
        if head[0].digest_key is None and (now - head[0].created_at).total_seconds() < every:
            return
        group = self.store.claim_digest(notifier.name, DIGEST_LIMIT)
        digest = Alert(
            id=group[0].id,
            channel=notifier.name,
            key=group[0].digest_key or group[0].key,
            payload={"kind": "digest", "alerts": [{"payload": a.payload, "folded": a.folded} for a in group]},
            attempts=max(a.attempts for a in group),
            next_attempt_at=group[0].next_attempt_at,
            created_at=group[0].created_at,
            digest_key=group[0].digest_key,
        )
        self._attempt(notifier, digest, [a.id for a in group], count)

    def _attempt(self, notifier: Notifier, alert: Alert, ids: list[int], count: DeliveryCount) -> bool:
        """Send once; True when the line may move on (sent, or dead)."""
        self._pace(notifier)
        try:
            notifier.send(alert)
        except Exception as error:
            return self._failed(notifier.name, alert, ids, error, count)
        finally:
            self._last_send[notifier.name] = time.monotonic()
        self.store.mark_sent(*ids)
        count.sent += len(ids)
        metrics.ALERTS.labels(notifier.name, "sent").inc(len(ids))
        return True

    def _pace(self, notifier: Notifier) -> None:
        """Leave the channel's min_interval between two messages (Slack takes one a second per webhook)."""
        gap = getattr(notifier, "min_interval", 0.0)
        last = self._last_send.get(notifier.name)
        if gap and last is not None:
            time.sleep(max(0.0, last + gap - time.monotonic()))

    def _failed(
        self, channel: str, alert: Alert, ids: list[int], error: Exception, count: DeliveryCount
    ) -> bool:
        """Record a failed attempt; True when the alert is now dead."""
        if not isinstance(error, DeliveryError):
            log.exception("%s: channel raised an unexpected error", channel)
            error = DeliveryError(f"{type(error).__name__}: {error}")
        attempts = alert.attempts + 1
        age = (utcnow() - alert.created_at).total_seconds()
        if not error.retry or attempts >= self.delivery.max_attempts or age >= self.delivery.max_age:
            why = "refused" if not error.retry else f"after {attempts} attempt(s) over {age / 60:.0f} min"
            log.error("%s: alert %s is dead (%s): %s", channel, alert.key, why, error)
            self.store.mark_failed(ids, str(error), retry_at=None)
            count.dead += len(ids)
            metrics.ALERTS.labels(channel, "dead").inc(len(ids))
            return True
        delay = retry_delay(attempts, error.retry_after, self.delivery.retry_base, self.delivery.retry_max)
        log.warning(
            "%s: alert %s failed (attempt %d), retrying in %.0fs: %s",
            channel,
            alert.key,
            attempts,
            delay,
            error,
        )
        self.store.mark_failed(ids, str(error), retry_at=utcnow() + timedelta(seconds=delay))
        count.failed += len(ids)
        metrics.ALERTS.labels(channel, "failed").inc(len(ids))
        return False


def retry_delay(
    attempts: int, retry_after: float | None = None, base: float = 15.0, cap: float = 3600.0
) -> float:
    """Exponential backoff with jitter (between half and all of base * 2^(n-1), at most `cap`), and never
    sooner than the channel's own Retry-After, itself capped: a receiver cannot park a channel for years."""
    ceiling = min(cap, base * 2 ** (attempts - 1))
    return max(random.uniform(ceiling / 2, ceiling), min(retry_after or 0.0, cap))
