"""The two steps of the service: poll one feed (fetch -> judge -> store) and deliver one channel's outbox.

Both are plain methods, called by the scheduler in `run` and directly by `once` and the tests. Neither lets
an exception out: a failing feed or channel is logged and recorded, and the others go on. Delivery itself
lives in bot.delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any

from bot import metrics
from bot.alerts import alert_payload
from bot.delivery import Courier, DeliveryCount
from bot.detect.detector import Detector, alerts_on
from bot.exchanges import link_posts
from bot.models import Fetch, Hit, Post
from bot.notifiers import Notifier
from bot.routing import Router
from bot.sources import RateLimited, Source, SourceError
from bot.spend import Reservations, budget_raised, publish, spend_at
from bot.timeutil import utcnow
from bot.watchdog import watch
from bot.watches import evaluate
from config.settings import Delivery, Exchanges, XSpend
from config.watches import Watch
from storage.store import FeedState, Found, PollSaved, Store

log = logging.getLogger("ringside.pipeline")


@dataclass
class Pipeline:
    store: Store
    detector: Detector
    sources: dict[str, Source]
    notifiers: Sequence[Notifier]
    delivery: Delivery = field(default_factory=Delivery)
    digests: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, float] = field(default_factory=dict)  # seconds between polls, per source
    watchdog_after: int = 0  # intervals without success before a feed is reported; 0: off
    exchanges: Exchanges | None = None  # people and rivalries for exchange detection
    router: Router | None = None  # which channels each alert goes to; None: every channel gets every alert
    x_spend: XSpend = field(default_factory=XSpend)  # X's price and the operator's budgets
    clock: Callable[[], datetime] = utcnow  # when a poll starts: the day its X reads are billed on
    watches: Sequence[Watch] = ()  # frequency, spike and silence rules
    courier: Courier = field(init=False)
    _x_reserved: Reservations = field(default_factory=Reservations, init=False, repr=False)

    def __post_init__(self) -> None:
        self.courier = Courier(self.store, self.notifiers, self.delivery, self.digests)
        if self.router is None:
            self.router = Router([n.name for n in self.notifiers])

    def adopt(
        self, detector: Detector, sources: dict[str, Source], notifiers: Sequence[Notifier], **tuned: Any
    ) -> None:
        """Poll and deliver with these from now on (a reload; the caller makes sure no poll is in flight).
        `tuned` holds the fields bot.app.tuned_by reads from the settings."""
        self.detector, self.sources, self.notifiers = detector, sources, notifiers
        for name, value in tuned.items():
            setattr(self, name, value)
        self.courier.adopt(notifiers, self.delivery, self.digests)

    def has_feed(self, source_name: str, feed: str) -> bool:
        """Whether the feed is still configured (a reload may have removed it while its poll waited)."""
        source = self.sources.get(source_name)
        return source is not None and feed in source.feeds()

    def feeds(self) -> Iterable[tuple[str, str]]:
        for name, source in self.sources.items():
            for feed in source.feeds():
                yield name, feed

    # -- poll ----------------------------------------------------------------------------------------

    def poll_until_caught_up(
        self, source_name: str, feed: str, stopping: Callable[[], bool] = lambda: False
    ) -> PollSaved | None:
        """Poll the feed again as long as its source says more posts are ready now (a replay file read in
        bounded batches), each batch its own transaction; stops early when `stopping()` turns true. Returns
        the last batch saved (None if that poll was skipped or failed)."""
        while True:
            saved = self.poll(source_name, feed)
            if saved is None or not saved.more or stopping():
                return saved

    def poll(self, source_name: str, feed: str) -> PollSaved | None:
        """Fetch, match and store one feed. Returns what was saved, or None when skipped or failed."""
        source = self.sources[source_name]
        where = f"{source_name}:{feed}"
        state = self.store.feed_state(source_name, feed)
        started = self.clock()
        if (
            state.paused_until
            and started < state.paused_until
            and not self._x_budget_raised(source, state, started)
        ):
            log.debug("%s: rate limited until %s; skipped", where, state.paused_until)
            return None
        held = 0  # posts of the X budget this poll holds until its reads are in the ledger
        try:
            if source.platform == "x":  # before X is asked, so a spent budget costs nothing more
                channels = [n.name for n in self.notifiers]
                held, fetch = self._x_reserved.fetch(
                    self.store, self.x_spend, channels, source, feed, state.cursor, started
                )
                if fetch is None:
                    log.info("%s: what the X budget leaves is being read by other X feeds; skipped", where)
                    return None
            else:
                fetch = source.fetch(feed, state.cursor)
            saved = self.store.save_poll(
                source_name,
                feed,
                started,
                fetch,
                self._hits(fetch),
                partial(self.router.channels_for, source=source_name),
                throttle=self.delivery.throttle,
                platform=source.platform,
                link=self._link if self.exchanges and self.exchanges.rivalries else None,
            )
        except RateLimited as error:
            metrics.POLLS.labels(source_name, "rate_limited").inc()
            log.warning("%s: %s", where, error)
            self._record_failure(source_name, feed, started, str(error), paused_until=error.reset_at)
            if error.whole_source:
                others = [other for other in source.feeds() if other != feed]
                self.store.pause_feeds(source_name, others, error.reset_at)
            return None
        except SourceError as error:
            metrics.POLLS.labels(source_name, "failed").inc()
            log.warning("%s: poll failed: %s", where, error)
            self._record_failure(source_name, feed, started, str(error))
            return None
        except Exception as error:  # a bug or a database fault: keep the service and the other feeds alive
            metrics.POLLS.labels(source_name, "failed").inc()
            log.exception("%s: poll failed unexpectedly", where)
            self._record_failure(source_name, feed, started, f"{type(error).__name__}: {error}")
            return None
        finally:
            self._x_reserved.release(held)
        saved = replace(saved, more=fetch.more)
        self._watch(source_name, feed, None)
        for error in saved.quarantined:
            log.warning("%s: record quarantined: %s", where, error)
        metrics.POLLS.labels(source_name, "ok").inc()
        metrics.POLL_SECONDS.labels(source_name).observe((utcnow() - started).total_seconds())
        metrics.POSTS_FETCHED.labels(source_name).inc(saved.fetched)
        metrics.POSTS_NEW.labels(source_name).inc(saved.new_posts)
        if source.platform == "x":
            metrics.X_POSTS_BILLED.labels(source_name).inc(saved.billed)
            self._publish_x_spend(started)
        for category, count in saved.categories.items():
            metrics.HITS.labels(category).inc(count)
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

    def _x_budget_raised(self, source: Source, state: FeedState, now: datetime) -> bool:
        """An X feed paused by a budget that the operator has raised since polls again at once."""
        assert state.paused_until is not None
        return source.platform == "x" and budget_raised(self.store, self.x_spend, state.paused_until, now)

    def _publish_x_spend(self, now: datetime) -> None:
        try:
            publish(spend_at(self.store, self.x_spend.price_per_post, now), self.x_spend)
        except Exception:  # the gauges are a read-out: a fault reading them must not fail a stored poll
            log.exception("could not read the X spend for /metrics")

    def _link(self, store: Store, posts: Sequence[Post], hits: dict[str, list[Hit]]) -> list[dict[str, Any]]:
        assert self.exchanges is not None
        return link_posts(store, self.exchanges, posts, hits)

    def _hits(self, fetch: Fetch) -> list[Found]:
        return [
            (judgement.post, hit, alert_payload(judgement.post, hit) if alerts_on(hit) else None)
            for judgement in self.detector.judge(fetch.posts)
            for hit in judgement.hits
        ]

    def _record_failure(
        self, source_name: str, feed: str, started: Any, error: str, paused_until: Any = None
    ) -> None:
        try:
            platform = self.sources[source_name].platform
            self.store.save_failed_poll(source_name, feed, started, error, paused_until, platform)
            self._watch(source_name, feed, error)
        except Exception:
            log.exception("%s:%s: could not record the failed poll", source_name, feed)

    def _watch(self, source_name: str, feed: str, error: str | None) -> None:
        every = self.intervals.get(source_name, 300.0)
        channels = [n.name for n in self.notifiers]
        watch(self.store, channels, source_name, feed, every, self.watchdog_after, error)

    # -- watches -------------------------------------------------------------------------------------

    def evaluate_watches(self, now: datetime | None = None) -> int:
        """Evaluate the frequency, spike and silence watches at `now` (default: this moment); returns the
        alert rows queued. Never raises: a failing watch is logged and the others go on."""
        if not self.watches:
            return 0
        try:
            people = self.exchanges or Exchanges()
            at, sources = now or utcnow(), set(self.sources)
            return evaluate(self.store, self.watches, people, self.router.channels_for, at, sources)
        except Exception:  # the people or the database: keep the service alive, try at the next evaluation
            log.exception("watches: evaluation failed")
            return 0

    # -- deliver -------------------------------------------------------------------------------------

    def deliver_all(self) -> dict[str, DeliveryCount]:
        return self.courier.deliver_all()

    def deliver(self, notifier: Notifier) -> DeliveryCount:
        return self.courier.deliver(notifier)
