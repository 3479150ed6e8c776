"""X spend under control: what X bills, against the operator's budgets.

X's pay-per-use plan bills each post object an endpoint returns, once per UTC day whatever the number of
requests that returned it (docs.x.com/x-api/fundamentals/post-cap, "Deduplication"). The store keeps that
ledger in the poll's own transaction (storage.spend); this module prices it and, before an X poll, stops the
X feeds once today's or this month's spend has reached its budget: they are paused until the next UTC day or
month, one notice per period goes through the channels, and every other platform goes on polling.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot import metrics
from bot.models import Fetch
from bot.sources import RateLimited, Source
from bot.watchdog import notice
from config.settings import XSpend
from storage.spend import utc_day
from storage.store import Store


class BudgetReached(RateLimited):
    """X's budget for the period is spent: every feed of the source waits until the period ends.

    Unlike a platform's rate limit, the pause may be longer than a day (a monthly budget)."""

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message, until, whole_source=True)
        self.reset_at = until


@dataclass(frozen=True)
class Spend:
    """Posts billed and dollars spent this UTC day and this UTC month, at `price` a post."""

    day_posts: int
    month_posts: int
    price: float

    @property
    def day(self) -> float:
        return self.day_posts * self.price

    @property
    def month(self) -> float:
        return self.month_posts * self.price


def spend_at(store: Store, price: float, now: datetime) -> Spend:
    """The ledger's spend on the UTC day and in the UTC month of `now`."""
    today = utc_day(now)
    return Spend(store.x_posts_billed(today, today), store.x_posts_billed(today[:8] + "01", today), price)


def day_start(now: datetime) -> datetime:
    """The start of `now`'s UTC day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    """The start of `now`'s UTC month."""
    return day_start(now).replace(day=1)


def next_day(now: datetime) -> datetime:
    return day_start(now) + timedelta(days=1)


def next_month(now: datetime) -> datetime:
    return (month_start(now) + timedelta(days=32)).replace(day=1)


@dataclass(frozen=True)
class Period:
    """A budget's period ("day" or "month") around a moment: when it started and ends, the budget, and the
    spend so far (dollars and posts)."""

    name: str
    started: datetime
    ends: datetime
    budget: float
    spent: float
    posts: int

    @property
    def spent_all(self) -> bool:
        # 400 posts at $0.005 must reach $2.00 although 400 * 0.005 is not exactly 2.0 in floating point.
        return self.spent >= self.budget - 1e-9


def budgets_reached(spend: Spend, budget: XSpend, now: datetime) -> list[Period]:
    """The periods around `now` (UTC day, UTC month) whose budget `spend` has reached."""
    periods = []
    if budget.budget_per_day is not None:
        periods.append(
            Period("day", day_start(now), next_day(now), budget.budget_per_day, spend.day, spend.day_posts)
        )
    if budget.budget_per_month is not None:
        periods.append(
            Period(
                "month",
                month_start(now),
                next_month(now),
                budget.budget_per_month,
                spend.month,
                spend.month_posts,
            )
        )
    return [period for period in periods if period.spent_all]


def check_budget(store: Store, budget: XSpend, channels: Sequence[str], now: datetime) -> Spend:
    """Today's and this month's X spend, published as metrics. Raises BudgetReached when a budget is spent,
    after queuing its notice to `channels` (once per period: the notice's key is the period's)."""
    spend = spend_at(store, budget.price_per_post, now)
    publish(spend, budget)
    reached = budgets_reached(spend, budget, now)
    if not reached:
        return spend
    # A spent month outlasts a spent day; on a month's last day both end together: the month says more.
    longest = max(reached, key=lambda period: (period.ends, period.name == "month"))
    text = (
        f"X budget reached: ${longest.spent:.2f} of ${longest.budget:.2f} per {longest.name} spent "
        f"({longest.posts} posts at ${budget.price_per_post:g} a post); X feeds paused until "
        f"{longest.ends.strftime('%Y-%m-%d %H:%M UTC')}, other platforms go on"
    )
    store.queue_notice(channels, budget_notice(longest, text))
    raise BudgetReached(text, longest.ends)


def posts_left(spend: Spend, budget: XSpend) -> int | None:
    """How many more posts X may return before the tighter budget is spent; None without a budget."""
    left = [
        limit - spent
        for limit, spent in ((budget.budget_per_day, spend.day), (budget.budget_per_month, spend.month))
        if limit is not None
    ]
    if not left:
        return None
    return max(0, int((min(left) + 1e-9) / budget.price_per_post))


class Reservations:
    """Posts of the X budget handed to X polls still running: polls of several X feeds at the same moment
    share what the budget leaves, rather than each asking X for all of it."""

    def __init__(self) -> None:
        self._held = 0
        self._lock = threading.Lock()

    def fetch(
        self,
        store: Store,
        budget: XSpend,
        channels: Sequence[str],
        source: Source,
        feed: str,
        cursor: str | None,
        now: datetime,
    ) -> tuple[int, Fetch | None]:
        """An X fetch of at most the posts the budgets leave, less what polls still running hold (the rest
        follows from the saved page once the budget allows), and the posts this poll now holds, which the
        caller releases once its reads are in the ledger; None when the polls running hold all that is left.
        BudgetReached, with its notice queued to `channels`, when a budget is already spent."""
        left = posts_left(check_budget(store, budget, channels, now), budget)
        if left is None:
            return 0, source.fetch(feed, cursor)
        with self._lock:
            allowed = max(0, left - self._held)
            if allowed == 0 and self._held:
                return 0, None
            self._held += allowed
        try:
            return allowed, source.fetch(feed, cursor, max_posts=allowed)  # type: ignore[call-arg]  # X's
        except BaseException:
            self.release(allowed)
            raise

    def release(self, posts: int) -> None:
        if posts:
            with self._lock:
                self._held -= posts


def budget_raised(store: Store, budget: XSpend, paused_until: datetime, now: datetime) -> bool:
    """Whether a feed paused until `paused_until` may poll now because its pause was a spent budget's (it
    ends where the UTC day or month does) and the budget, raised or removed since, is no longer reached.

    A platform's rate limit that happens to end exactly at midnight passes too: X then answers 429 and the
    feed is paused again, until X's own reset."""
    if paused_until not in (next_day(now), next_month(now)):
        return False
    return not budgets_reached(spend_at(store, budget.price_per_post, now), budget, now)


def budget_notice(reached: Period, text: str) -> dict:
    """The notice of a spent budget: a watchdog message (every channel renders those) from the source
    "budget"; its key is the period's, the same for every feed that finds that budget spent."""
    return notice("failing", "budget", f"x:{reached.name}", reached.started, None, text=text)


def publish(spend: Spend, budget: XSpend) -> None:
    """Set the spend and budget gauges of /metrics from the ledger."""
    metrics.X_SPEND.labels("day").set(round(spend.day, 6))
    metrics.X_SPEND.labels("month").set(round(spend.month, 6))
    for period, limit in (("day", budget.budget_per_day), ("month", budget.budget_per_month)):
        if limit is not None:
            metrics.X_BUDGET.labels(period).set(limit)
