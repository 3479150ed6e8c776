"""A channel's routing filters, read from its [[channels]] table: which alerts the channel wants.

    [[channels]]
    name = "slack-main"
    type = "slack"
    min_severity = 4                          # hits and exchange turns of severity 4 and 5
    categories = ["challenge", "exchange"]    # rule categories, and "exchange" for exchange turns
    rules = ["cage-fight", "model"]           # rule ids ("model": hits the learned scorer decided)
    people = ["musk"]                         # ids of [[people]] tables: posts by any of their accounts
    platforms = ["x", "instagram"]
    sources = ["x"]                           # names of [[sources]] tables
    coverage = true                           # also the press: hits on posts from RSS/Atom feeds

Every key is optional (absent: every alert passes it); keys combine with AND, the names in one list with OR.
What each filter means for each kind of alert is decided in bot.routing. Names that need the rule pack (rule
ids, categories) are checked there; names that need only the settings file are checked here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from config.sources import SOURCE_OPTIONS
from config.table import Table

# The platforms a post can come from: every source type but the replay, which replays posts of these.
PLATFORMS = tuple(kind for kind in SOURCE_OPTIONS if kind != "replay")
# The category an exchange turn is routed as: it is no rule's hit, but a channel may want or refuse them.
EXCHANGE_CATEGORY = "exchange"
# The press: a hit on a post from an RSS or Atom feed retells other people's feuds (the label guide's
# "coverage"), so a channel takes such hits only when it opts in with `coverage = true`.
COVERAGE_PLATFORM = "rss"
FILTER_KEYS = ("min_severity", "categories", "rules", "people", "platforms", "sources", "coverage")


@dataclass(frozen=True)
class Route:
    """The filters of one channel. An empty set means the key was absent: every alert passes it."""

    min_severity: int = 1
    categories: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    people: frozenset[str] = frozenset()
    platforms: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    coverage: bool = False

    def shown(self) -> dict[str, Any]:
        """The filters that are set, as plain data (for check-config)."""
        shown: dict[str, Any] = {}
        if self.min_severity > 1:
            shown["min_severity"] = self.min_severity
        for key in ("categories", "rules", "people", "platforms", "sources"):
            if getattr(self, key):
                shown[key] = sorted(getattr(self, key))
        if self.coverage:
            shown["coverage"] = True
        return shown


def route_from_table(table: Table, people: Collection[str], sources: Collection[str]) -> Route:
    """The channel's filters; a ConfigError naming the file and key for a wrong type, an empty list, or a
    person, platform or source that the settings do not have."""
    min_severity = table.get("min_severity", "int", 1)
    if not 1 <= min_severity <= 5:
        table.fail("min_severity", f"expected a whole number from 1 to 5, got {min_severity}")
    return Route(
        min_severity=min_severity,
        categories=_names(table, "categories"),
        rules=_names(table, "rules"),
        people=_known(table, "people", people, "the id of a [[people]] table"),
        platforms=_known(table, "platforms", PLATFORMS, f"a platform ({', '.join(PLATFORMS)})"),
        sources=_known(table, "sources", sources, "the name of a [[sources]] table"),
        coverage=table.get("coverage", "bool", False),
    )


def _names(table: Table, key: str) -> frozenset[str]:
    names = table.get(key, "names", ())
    if key in table.data and not names:
        table.fail(key, "an empty list lets nothing through; leave the key out to let every alert through")
    return frozenset(name.lower() if key == "platforms" else name for name in names)


def _known(table: Table, key: str, known: Collection[str], what: str) -> frozenset[str]:
    names = _names(table, key)
    unknown = sorted(names - set(known))
    if unknown:
        table.fail(key, f"{unknown[0]!r} is not {what}")
    return names
