"""Delivery: each channel's outbox sent in creation order, at least once, with backoff, pacing and digests.

An alert is marked sent only after its channel accepted it, so a crash between the two sends it again with
the same idempotency key. A failure is retried with exponential backoff and jitter, never sooner than the
channel's Retry-After; a permanent refusal, too many attempts or too much time makes it dead (kept, with its
last error, for reports and `alerts retry-dead`).

A channel that refuses REFUSALS_TO_PAUSE alerts in a row for good (its URL is gone: 404 to everything) is
paused instead of killing its alerts one by one: they are all kept pending, one notice goes out through the
other channels, and `alerts resume --channel NAME` sends them once it is fixed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from bot import metrics
from bot.notifiers import DeliveryError, Notifier
from bot.timeutil import utcnow
from bot.watchdog import notice
from config.settings import Delivery
from storage.outbox import REFUSED
from storage.store import Alert, Store

log = logging.getLogger("ringside.delivery")
BATCH = 100
DIGEST_LIMIT = 200  # alerts in one digest message at most; the rest go in the next one
# Permanent refusals of different alerts in a row, with none accepted between, that mean the channel itself is
# refused (a revoked webhook) rather than one alert it could not take (a message too long).
REFUSALS_TO_PAUSE = 3


@dataclass
class DeliveryCount:
    sent: int = 0
    failed: int = 0
    dead: int = 0
    dead_ids: list[int] = field(default_factory=list, repr=False)  # which ones, should a pause revive them

    def add(self, other: DeliveryCount) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.dead += other.dead
        self.dead_ids += other.dead_ids

    def died(self, ids: list[int]) -> None:
        self.dead += len(ids)
        self.dead_ids += ids

    def revived(self, ids: list[int]) -> None:
        back = set(ids) & set(self.dead_ids)
        self.dead -= len(back)
        self.dead_ids = [i for i in self.dead_ids if i not in back]


class Courier:
    def __init__(
        self,
        store: Store,
        notifiers: Sequence[Notifier],
        delivery: Delivery,
        digests: dict[str, float] | None = None,
        progress_every: float = 0.0,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.delivery = delivery
        self.digests = digests or {}
        # Seconds between two progress lines while a paced channel works through its outbox; 0: none (the
        # service's own log says enough; `once` sets it, so a command that takes a minute is never silent).
        self.progress_every = progress_every
        self._progress: dict[str, list[float]] = {}  # channel -> [alerts due at the start, last line's time]
        self._locks = {n.name: threading.Lock() for n in notifiers}
        self._last_send: dict[str, float] = {}
        self._notice_queued = False
        self._halted = threading.Event()

    def adopt(self, notifiers: Sequence[Notifier], delivery: Delivery, digests: dict[str, float]) -> None:
        """Deliver to these channels from now on (a reload). A channel's lock and pacing are kept by its
        name, so a changed channel's old and new versions never send at once, nor faster than its pace."""
        for notifier in notifiers:
            self._locks.setdefault(notifier.name, threading.Lock())
        self.notifiers, self.delivery, self.digests = notifiers, delivery, digests

    def retired(self, notifier: Notifier) -> bool:
        """Whether a reload removed or replaced this channel: its delivery in flight stops after the alert
        in hand, and what it leaves pending waits in the outbox (for its new version, if any)."""
        return all(current is not notifier for current in self.notifiers)

    def halt(self) -> None:
        """Send nothing more: the alert in flight finishes, the rest stay pending for the next start (a stop
        then waits for one request, not for a whole backlog)."""
        self._halted.set()

    def deliver_all(self) -> dict[str, DeliveryCount]:
        """Deliver every channel once; if one was paused meanwhile, a second round sends its notice now."""
        counts = {notifier.name: self.deliver(notifier) for notifier in self.notifiers}
        if self._notice_queued:
            self._notice_queued = False
            for notifier in self.notifiers:
                counts[notifier.name].add(self.deliver(notifier))
        return counts

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
                self._announce(notifier)
                while self._deliver_batch(notifier, count):
                    pass
        except Exception:
            log.exception("%s: delivery failed unexpectedly", notifier.name)
        finally:
            self._progress.pop(notifier.name, None)
            lock.release()
        return count

    def _deliver_batch(self, notifier: Notifier, count: DeliveryCount) -> bool:
        """Deliver up to one batch; True when it went through the whole batch and more may be due."""
        batch = self.store.pending_alerts(notifier.name, limit=BATCH)
        for alert in batch:
            if alert.next_attempt_at > utcnow() or self._halted.is_set() or self.retired(notifier):
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
        """Send once; True when the line may move on (sent, or dead).

        The attempt is counted, with its backoff, before the send: when the database then fails to record
        the outcome, the alert goes out again only after that backoff, and never more than max_attempts
        times (the receiver drops the repeats by their idempotency key)."""
        if alert.attempts >= self.delivery.max_attempts:
            return self._give_up(notifier.name, alert, ids, count)
        self._pace(notifier)
        if self._halted.is_set():  # stopped while pacing: this alert waits for the next start
            return False
        backoff = retry_delay(alert.attempts + 1, None, self.delivery.retry_base, self.delivery.retry_max)
        self.store.begin_attempt(ids, utcnow() + timedelta(seconds=backoff))
        try:
            notifier.send(alert)
        except Exception as error:
            return self._failed(notifier.name, alert, ids, error, count)
        finally:
            self._last_send[notifier.name] = time.monotonic()
        self.store.mark_sent(*ids)
        count.sent += len(ids)
        metrics.ALERTS.labels(notifier.name, "sent").inc(len(ids))
        self._report(notifier, count)
        return True

    def _announce(self, notifier: Notifier) -> None:
        """Say how long the channel's outbox will take when its pacing makes that longer than
        progress_every, and start reporting progress."""
        gap = getattr(notifier, "min_interval", 0.0)
        if not self.progress_every or not gap:
            return
        head = self.store.pending_alerts(notifier.name, limit=1)
        if not head or head[0].next_attempt_at > utcnow():  # nothing to send now (a retry, or paused)
            return
        due = self.store.due_count(notifier.name)
        if due * gap < self.progress_every:
            return
        log.info(
            "delivering %d alert(s) to %s, one every %g s: about %.0f s", due, notifier.name, gap, due * gap
        )
        self._progress[notifier.name] = [due, time.monotonic()]

    def _report(self, notifier: Notifier, count: DeliveryCount) -> None:
        """One progress line when progress_every has passed since the last."""
        progress = self._progress.get(notifier.name)
        if progress is None or time.monotonic() - progress[1] < self.progress_every:
            return
        progress[1] = time.monotonic()
        due = int(progress[0])
        left = max(0, due - count.sent - count.dead) * getattr(notifier, "min_interval", 0.0)
        log.info("delivering: %d/%d sent to %s, about %.0f s left", count.sent, due, notifier.name, left)

    def _give_up(self, channel: str, alert: Alert, ids: list[int], count: DeliveryCount) -> bool:
        """Make dead, unsent, an alert whose attempts are used up though none was recorded as failed (the
        database failed after a send); True, so the line moves on."""
        error = f"gave up: {alert.attempts} attempt(s) made, none recorded as accepted"
        log.error("%s: alert %s is dead: %s", channel, alert.key, error)
        self.store.mark_failed(ids, error, retry_at=None)
        count.died(ids)
        metrics.ALERTS.labels(channel, "dead").inc(len(ids))
        return True

    def _pace(self, notifier: Notifier) -> None:
        """Leave the channel's min_interval between two messages (Slack takes one a second per webhook)."""
        gap = getattr(notifier, "min_interval", 0.0)
        last = self._last_send.get(notifier.name)
        if gap and last is not None:
            self._halted.wait(max(0.0, last + gap - time.monotonic()))  # a stop cuts the wait short

    def _failed(
        self, channel: str, alert: Alert, ids: list[int], error: Exception, count: DeliveryCount
    ) -> bool:
        """Record a failed attempt; True when the alert is now dead."""
        if not isinstance(error, DeliveryError):
            log.exception("%s: channel raised an unexpected error", channel)
            error = DeliveryError(f"{type(error).__name__}: {error}")
        attempts = alert.attempts + 1
        age = (utcnow() - alert.created_at).total_seconds()
        if not error.retry:
            # Read from the outbox, not kept in memory: cron's `once` runs, each with an alert or two, and a
            # restarted service count the same streak.
            earlier = self.store.refused_in_a_row(channel)
            if len(earlier) + len(ids) >= REFUSALS_TO_PAUSE:
                self._pause(channel, error, count, earlier + ids)
                return False
        if not error.retry or attempts >= self.delivery.max_attempts or age >= self.delivery.max_age:
            why = "refused" if not error.retry else f"after {attempts} attempt(s) over {age / 60:.0f} min"
            log.error("%s: alert %s is dead (%s): %s", channel, alert.key, why, error)
            self.store.mark_failed(ids, str(error) if error.retry else refusal(error), retry_at=None)
            count.died(ids)
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

    def _pause(self, channel: str, error: DeliveryError, count: DeliveryCount, refused: list[int]) -> None:
        """Hold the channel's alerts, the refused ones brought back from dead, and tell the other channels
        once."""
        count.revived(refused)
        resume = f"run_bot.py alerts resume --channel {channel}"
        # Cut so that the stored reason, with the resume hint, stays within MESSAGE_LIMIT.
        reason = f"paused after {REFUSALS_TO_PAUSE} alerts in a row were refused (last: {str(error)[:160]})"
        kept = self.store.pause_channel(channel, f"{reason}; fix it, then {resume}", refused)
        log.error("%s: %s; its %d pending alert(s) are kept: fix it, then %s", channel, reason, kept, resume)
        others = [n.name for n in self.notifiers if n.name != channel]
        if others:
            self.store.queue_notice(others, channel_paused_notice(channel, str(error), kept, resume))
            self._notice_queued = True


def refusal(error: DeliveryError) -> str:
    """How a permanent refusal is stored: marked, whatever channel said it, so refused_in_a_row finds it."""
    text = str(error)
    return text if REFUSED in text else f"{REFUSED}{text})"


def channel_paused_notice(channel: str, error: str, kept: int, resume: str) -> dict:
    """A watchdog message (the kind every channel renders) saying the channel is paused and how to resume it,
    under a key of its own for each pause."""
    text = f"channel {channel} refuses every alert ({error}): paused, its {kept} alert(s) are kept; "
    text += f"fix it, then {resume}"
    return notice("failing", "channel", channel, utcnow(), error, text=text)


def retry_delay(
    attempts: int, retry_after: float | None = None, base: float = 15.0, cap: float = 3600.0
) -> float:
    """Exponential backoff with jitter (between half and all of base * 2^(n-1), at most `cap`), and never
    sooner than the channel's own Retry-After, itself capped: a receiver cannot park a channel for years."""
    ceiling = min(cap, base * 2 ** (attempts - 1))
    return max(random.uniform(ceiling / 2, ceiling), min(retry_after or 0.0, cap))
