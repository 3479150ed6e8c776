"""Watch rules ([[watches]] tables): alerts about patterns over time rather than one post, as ElastAlert's
frequency, spike and flatline rules are.

    frequency  two people mention, reply to or quote each other at least `count` times within `hours`
    spike      posts with a hit of `category` in the last `hours` are at least `ratio` times their usual
               number (the mean over the `baseline_days` before), and at least `min_hits`
    silence    a person (every account) or one account has posted nothing for `days`

Each watch has a name (its alerts' rule id), a severity and a throttle. Errors name the file and the key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from config.routes import PLATFORMS
from config.table import ConfigError, Table

WATCH_TYPES = ("frequency", "spike", "silence")


@dataclass(frozen=True)
class Watch:
    """One watch rule. `people` are person ids (frequency: the two; silence: the one, if a person is
    watched); `account` is "platform:handle" when silence watches a single account."""

    name: str
    type: str
    severity: int = 3
    throttle: float = 0.0  # seconds: the least time between two alerts of this watch
    people: tuple[str, ...] = ()
    account: str | None = None
    count: int = 0
    hours: float = 0.0
    category: str | None = None
    ratio: float = 3.0
    baseline_days: float = 7.0
    min_hits: int = 5
    days: float = 0.0
    where: str = ""  # "watches[2]", for errors found after loading (a category the rules lack)

    @property
    def window(self) -> float:
        """Seconds of the window the watch counts over (silence: how long a person must be quiet)."""
        return self.days * 86400.0 if self.type == "silence" else self.hours * 3600.0

    def describe(self) -> str:
        """One line saying what the watch fires on, as check-config lists it."""
        if self.type == "frequency":
            what = (
                f"{' and '.join(self.people)} mention, reply to or quote each other at least {self.count} "
                f"times within {self.hours:g}h"
            )
        elif self.type == "spike":
            what = (
                f"posts with a {self.category} hit in {self.hours:g}h reach {self.ratio:g} times the mean of "
                f"the {self.baseline_days:g} days before, and at least {self.min_hits}"
            )
        else:
            what = f"{self.people[0] if self.people else self.account} posts nothing for {self.days:g} days"
        throttle = f", throttle {self.throttle:g}s" if self.throttle else ""
        return f"{self.name} ({self.type}, severity {self.severity}{throttle}): fires when {what}"


def watches_from_tables(tables: list[Table], person_ids: Collection[str]) -> tuple[Watch, ...]:
    """Read every [[watches]] table; ConfigError naming the file and key for a wrong one."""
    watches = [_watch(table, person_ids) for table in tables]
    seen: set[str] = set()
    for table, watch in zip(tables, watches, strict=True):
        if watch.name in seen:
            table.fail("name", f"{watch.name!r} is used twice; watch names must be unique")
        seen.add(watch.name)
    return tuple(watches)


def check_categories(
    watches: Iterable[Watch],
    categories: Collection[str],
    file: Path,
    rules: Path,
    rule_ids: Collection[str] = (),
) -> None:
    """Every spike watch counts a category the rules have (a typo would never fire), and no watch is named
    as a rule (its alerts carry its name as their rule: a mute or a `rules` filter would take both);
    ConfigError if not."""
    for watch in watches:
        if watch.name in rule_ids:
            raise ConfigError(
                f"{file}: {watch.where}.name: {watch.name!r} is the id of a rule in {rules}; give the watch "
                "a name of its own"
            )
        if watch.category is not None and watch.category not in categories:
            known = ", ".join(sorted(categories)) or "none"
            raise ConfigError(
                f"{file}: {watch.where}.category: {watch.category!r} is no category of the rules in {rules} "
                f"(they have: {known})"
            )


def _watch(table: Table, person_ids: Collection[str]) -> Watch:
    kind = table.get("type", "str")
    if kind not in WATCH_TYPES:
        table.fail("type", f"unknown watch type {kind!r}; expected one of: {', '.join(WATCH_TYPES)}")
    common = {
        "name": table.get("name", "str"),
        "type": kind,
        "severity": table.get("severity", "int", 3),
        "throttle": table.get("throttle", "duration", 0.0),
        "where": table.where,
    }
    if not 1 <= common["severity"] <= 5:
        table.fail("severity", f"expected a whole number from 1 to 5, got {common['severity']}")
    specific = {"frequency": _frequency, "spike": _spike, "silence": _silence}[kind](table, person_ids)
    table.finish()
    return Watch(**common, **specific)


def _frequency(table: Table, person_ids: Collection[str]) -> dict:
    people = table.get("people", "names")
    if len(set(people)) != 2:
        table.fail("people", f"expected two different person ids, got {list(people)!r}")
    for person in people:
        _check_person(table, "people", person, person_ids)
    count = table.get("count", "int")
    if count < 1:
        table.fail("count", f"expected a whole number of at least 1, got {count}")
    return {"people": tuple(people), "count": count, "hours": _positive(table, "hours")}


def _spike(table: Table, _person_ids: Collection[str]) -> dict:
    ratio = _positive(table, "ratio", 3.0)
    if ratio <= 1:
        table.fail("ratio", f"expected a number above 1 (how many times the usual rate), got {ratio}")
    min_hits = table.get("min_hits", "int", 5)
    if min_hits < 1:
        table.fail("min_hits", f"expected a whole number of at least 1, got {min_hits}")
    return {
        "category": table.get("category", "str"),
        "hours": _positive(table, "hours"),
        "ratio": ratio,
        "baseline_days": _positive(table, "baseline_days", 7.0),
        "min_hits": min_hits,
    }


def _silence(table: Table, person_ids: Collection[str]) -> dict:
    person = table.get("person", "str", None)
    account = table.get("account", "str", None)
    if (person is None) == (account is None):
        table.fail("person", 'expected either person = "<a [[people]] id>" or account = "platform:handle"')
    if person is not None:
        _check_person(table, "person", person, person_ids)
    if account is not None:
        platform, _, handle = account.partition(":")
        if not platform or not handle.lstrip("@"):
            table.fail("account", f"{account!r}: expected platform:handle, such as x:elonmusk")
        if platform.lower() not in PLATFORMS:  # a typo would watch an account no feed ever brings
            table.fail("account", f"{account!r}: {platform!r} is not a platform ({', '.join(PLATFORMS)})")
    return {
        "people": (person,) if person else (),
        "account": _account(account) if account else None,
        "days": _positive(table, "days"),
    }


def _account(account: str) -> str:
    """ "X:@ElonMusk" -> "x:elonmusk": the form posts are matched in (platform and handle, lower case)."""
    platform, _, handle = account.lower().partition(":")
    return f"{platform}:{handle.lstrip('@')}"


def _check_person(table: Table, key: str, person: str, person_ids: Collection[str]) -> None:
    if person not in person_ids:
        table.fail(key, f"{person!r} is not the id of a [[people]] table")


def _positive(table: Table, key: str, default: float | None = None) -> float:
    """A number above zero (whole or not); `default` None makes the key required."""
    table.used.add(key)
    if key not in table.data:
        if default is None:
            table.fail(key, "missing; expected a number above zero")
        return float(default)  # type: ignore[arg-type]
    value = table.data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        table.fail(key, f"expected a number above zero, got {value!r}")
    return float(value)
