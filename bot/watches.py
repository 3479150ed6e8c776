"""Watches: frequency, spike and silence rules over the stored posts and hits (see config.watches).

Each evaluation asks every watch whether it fires now. A watch alerts when it starts firing (one alert per
episode, whatever number of evaluations it keeps firing for), again when it clears and fires again, and,
with a `throttle`, again after that long while it keeps firing (a reminder); a watch that clears and fires
again within its throttle of its last alert stays quiet. The state (firing since when, alerts made) and the
alert are saved in one transaction, so a crash never makes an alert twice or loses one. The idempotency key
(rs1f-...) is derived from the watch's name, when its episode began and the alert's number in it.

Silence is only claimed from evidence: every watched feed of the person must be healthy (its newest poll
succeeded) and have polled successfully after the silence began; a failing feed is the watchdog's
business, and leaves the watch as it was rather than firing or clearing it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.timeutil import iso
from config.settings import Exchanges, Person
from config.watches import Watch
from storage.exchanges import StoredPost
from storage.outbox import ChannelsFor
from storage.store import Store
from storage.watches import WatchState

log = logging.getLogger("ringside.watches")
POSTS_SHOWN = 10  # posts an alert carries as its evidence, the newest


@dataclass(frozen=True)
class Finding:
    """A watch firing: what it measured, over which window, about whom."""

    text: str
    start: datetime
    end: datetime
    measured: dict[str, Any]
    people: tuple[str, ...] = ()
    posts: tuple[StoredPost, ...] = ()
    platforms: tuple[str, ...] = field(default=())


class Unknown:
    """The watch cannot tell now (a feed it depends on is failing): its state stays as it was."""


UNKNOWN = Unknown()
Outcome = Finding | Unknown | None  # None: not firing


def evaluate(
    store: Store,
    watches: Sequence[Watch],
    exchanges: Exchanges,
    channels: ChannelsFor,
    now: datetime,
    sources: Collection[str] | None = None,
) -> int:
    """Evaluate every watch at `now`; queue its alert when due. Returns the alert rows queued. A watch that
    fails is logged and the others go on. `sources` are the sources configured now (None: every source
    that ever stored a post): silence takes its evidence from their feeds only."""
    queued = 0
    for watch in watches:
        try:
            queued += evaluate_one(store, watch, exchanges, channels, now, sources)
        except Exception:
            log.exception("watch %s: evaluation failed", watch.name)
    return queued


def evaluate_one(
    store: Store,
    watch: Watch,
    exchanges: Exchanges,
    channels: ChannelsFor,
    now: datetime,
    sources: Collection[str] | None = None,
) -> int:
    if watch.type == "silence":
        outcome = check_silence(store, watch, exchanges, now, sources)
    else:
        outcome = CHECKS[watch.type](store, watch, exchanges, now)
    if isinstance(outcome, Unknown):
        return 0
    state = store.watch_state(watch.name)
    new_state, payload = decide(watch, state, outcome, now, exchanges)
    if payload is not None:
        log.warning("watch %s: %s", watch.name, payload["text"])
    elif state.firing_since and outcome is None:
        log.info("watch %s: cleared (firing since %s)", watch.name, iso(state.firing_since))
    return store.record_watch(watch.name, new_state, now, channels, payload)


def decide(
    watch: Watch, state: WatchState, outcome: Finding | None, now: datetime, exchanges: Exchanges
) -> tuple[WatchState, dict[str, Any] | None]:
    """The watch's next state, and the alert to make now (None: none)."""
    if outcome is None:
        return WatchState(None, 0, state.last_alert_at), None
    since = state.firing_since or now
    throttled = (
        watch.throttle > 0
        and state.last_alert_at is not None
        and now - state.last_alert_at < timedelta(seconds=watch.throttle)
    )
    due = not throttled and (state.alerts == 0 or watch.throttle > 0)
    if not due:
        return WatchState(since, state.alerts, state.last_alert_at), None
    number = state.alerts + 1
    return WatchState(since, number, now), watch_payload(watch, outcome, since, number, exchanges)


def watch_key(name: str, since: datetime, number: int) -> str:
    """Stable for one alert of one episode: a retry, or an evaluation redone after a crash, has the same."""
    digest = hashlib.sha256(f"{name}\x00{iso(since)}\x00{number}".encode()).hexdigest()[:32]
    return f"rs1f-{digest}"


def watch_payload(
    watch: Watch, finding: Finding, since: datetime, number: int, exchanges: Exchanges
) -> dict[str, Any]:
    """Everything a channel needs, and the fields routing filters on: rule (id = the watch's name, category =
    its type, severity), people and platforms."""
    names = {p.id: p.name for p in exchanges.people}
    return {
        "kind": "watch",
        "key": watch_key(watch.name, since, number),
        "rule": {"id": watch.name, "category": watch.type, "severity": watch.severity},
        "watch": {"name": watch.name, "type": watch.type, "firing_since": iso(since), "alert": number},
        "window": {"start": iso(finding.start), "end": iso(finding.end)},
        "people": list(finding.people),
        "names": [names.get(p, p) for p in finding.people],
        "platforms": sorted(set(finding.platforms) | {p.platform for p in finding.posts}),
        "measured": finding.measured,
        "text": finding.text,
        "posts": [_post_dict(post) for post in finding.posts[-POSTS_SHOWN:]],
    }


def _post_dict(post: StoredPost) -> dict[str, Any]:
    return vars(post) | {"created_at": iso(post.created_at)}


# -- the three kinds ---------------------------------------------------------------------------------


def check_frequency(store: Store, watch: Watch, exchanges: Exchanges, now: datetime) -> Outcome:
    first, second = (_person(exchanges, p) for p in watch.people)
    since = now - timedelta(seconds=watch.window)
    posts = store.posts_addressing(sorted(first.accounts), sorted(second.accounts), since, now)
    posts += store.posts_addressing(sorted(second.accounts), sorted(first.accounts), since, now)
    if len(posts) < watch.count:
        return None
    posts.sort(key=lambda post: (post.created_at, post.key))
    return Finding(
        text=(
            f"{first.name} and {second.name} addressed each other {len(posts)} times in the last "
            f"{_hours(watch.hours)} (this watch fires at {watch.count})"
        ),
        start=since,
        end=now,
        measured={"count": len(posts), "threshold": watch.count, "hours": watch.hours},
        people=(first.id, second.id),
        posts=tuple(posts),
    )


def check_spike(store: Store, watch: Watch, exchanges: Exchanges, now: datetime) -> Outcome:
    """Posts with a hit of the category in the window against the mean of the baseline before it. The
    baseline starts no earlier than the oldest stored post: days before Ringside ran are no quiet days."""
    assert watch.category is not None
    window = timedelta(seconds=watch.window)
    start = now - window
    baseline_start = max(now - window - timedelta(days=watch.baseline_days), store.first_post_at() or now)
    if start - baseline_start < window:
        return None  # less history than one window: no usual rate to compare with
    hits = store.posts_in_category(watch.category, start, now)
    baseline = store.posts_in_category(watch.category, baseline_start, start)
    usual = baseline * (window / (start - baseline_start))  # the mean per window-long stretch
    if hits < watch.min_hits or hits < watch.ratio * usual:
        return None
    posts = store.latest_posts_in_category(watch.category, start, now, POSTS_SHOWN)[::-1]
    ratio = f"{hits / usual:.1f} times" if usual else "far above"
    return Finding(
        text=(
            f"{hits} posts of category {watch.category} in the last {_hours(watch.hours)}: {ratio} the usual "
            f"{usual:.1f} (mean over the {_days((start - baseline_start) / timedelta(days=1))} before)"
        ),
        start=start,
        end=now,
        measured={
            "hits": hits,
            "usual": round(usual, 3),
            "ratio": round(hits / usual, 2) if usual else None,
            "threshold_ratio": watch.ratio,
            "min_hits": watch.min_hits,
            "hours": watch.hours,
            "baseline_days": round((start - baseline_start) / timedelta(days=1), 3),
        },
        people=_people_among(exchanges, posts),
        posts=tuple(posts),
    )


def check_silence(
    store: Store, watch: Watch, exchanges: Exchanges, now: datetime, sources: Collection[str] | None = None
) -> Outcome:
    """Silent when the newest post of any of the accounts is at least `days` old, and every account's feed
    that is polled at all (by one of `sources`, those configured now) is healthy and polled successfully
    since the silence began. A source removed from the settings polls nothing: its last poll is no
    evidence either way."""
    person = _person(exchanges, watch.people[0]) if watch.people else None
    accounts = sorted(person.accounts) if person else [watch.account or ""]
    last = {a: at for a in accounts if (at := store.last_post_at(a)) is not None}
    if not last:
        return UNKNOWN  # never seen posting: no silence to measure from
    newest = max(last.values())
    silent_from = newest + timedelta(seconds=watch.window)
    if now < silent_from:
        return None
    evidence = [e for e in (store.feed_evidence(a, sources) for a in accounts) if e is not None]
    if not evidence or any(
        e.failing or e.last_success is None or e.last_success < silent_from for e in evidence
    ):
        return UNKNOWN
    who = person.name if person else accounts[0]
    quiet = (now - newest) / timedelta(days=1)
    return Finding(
        text=(
            f"{who} has not posted for {_days(quiet)} (last post {newest:%Y-%m-%d %H:%M} UTC; "
            f"this watch fires after {_days(watch.days)})"
        ),
        start=newest,
        end=now,
        measured={"last_post_at": iso(newest), "days_quiet": round(quiet, 3), "days": watch.days},
        people=(person.id,) if person else (),
        platforms=tuple(sorted({a.partition(":")[0] for a in last})),  # where they were seen posting
    )


CHECKS = {"frequency": check_frequency, "spike": check_spike, "silence": check_silence}


def _person(exchanges: Exchanges, person_id: str) -> Person:
    return next(p for p in exchanges.people if p.id == person_id)


def _people_among(exchanges: Exchanges, posts: Sequence[StoredPost]) -> tuple[str, ...]:
    found = {exchanges.person_of(post.platform, post.author) for post in posts}
    return tuple(sorted(p.id for p in found if p is not None))


def _hours(hours: float) -> str:
    return f"{hours:g}h"


def _days(days: float) -> str:
    shown = f"{round(days, 1):g}"
    return f"{shown} day" if shown == "1" else f"{shown} days"
