"""Routing: which channels an alert goes to, decided once, when the alert is put in the outbox.

A channel's filters (config.routes.Route) and a rule's own `channels` list decide. A channel a filter
refuses gets no alert row at all; everything after (throttle, mutes, digests, idempotency keys) works on the
rows that were made, as before.

What each filter means for each kind of alert:

    filter        a hit                          an exchange turn                a health notice
    min_severity  the hit's severity             the exchange's severity         -
    categories    the hit's category             "exchange"                      -
    rules         the rule id ("model")          -                               -
    people        the author's [[people]] id     any of the exchange's people    -
    platforms     the post's platform            any platform of its posts       -
    sources       the source that fetched it     the source whose poll made it   -
    coverage      a press source's hits need it  -                               -
    rule channels the rule's `channels` list     -                               -

A watch's alert (frequency, spike, silence) is filtered like a hit: its severity, its type as category, its
name as rule id, the people and platforms it is about (a spike has none: those filters let it through).

"-": the alert has no such fact and the filter lets it through. A health notice (a feed failing or back, a
channel paused) is about the service itself and reaches every channel whatever its filters. A rule's
`channels` list narrows where its hits go; each of those channels still applies its own filters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.detect.rules import CATEGORIES, Rule
from bot.models import MODEL_RULE
from config.routes import COVERAGE_PLATFORM, EXCHANGE_CATEGORY
from config.settings import ChannelConfig, Exchanges, Settings
from config.table import ConfigError
from config.watches import WATCH_TYPES

HIT, EXCHANGE, WATCH, NOTICE = "hit", "exchange", "watch", "notice"
# Payload kinds that are about the service's own health: every channel hears of them.
_HEALTH_KINDS = {"watchdog": NOTICE}


@dataclass(frozen=True)
class AlertFacts:
    """What routing knows of one alert. None: the alert has no such fact, and a filter on it lets it
    through; an empty set is a fact (a hit whose author is no configured person has people = {})."""

    kind: str = HIT
    severity: int | None = None
    category: str | None = None
    rule: str | None = None
    people: frozenset[str] | None = None
    platforms: frozenset[str] | None = None
    source: str | None = None
    coverage: bool = False  # a hit on a post from the press (an RSS/Atom feed)
    only_to: tuple[str, ...] | None = None  # the rule's own `channels`, when it names them


def refusal(channel: ChannelConfig, facts: AlertFacts) -> str | None:
    """Why `channel` does not want an alert with these facts, in a few words; None when it wants it."""
    if facts.kind == NOTICE:
        return None
    if facts.only_to is not None and channel.name not in facts.only_to:
        return f"the rule sends only to {', '.join(facts.only_to)}"
    route = channel.route
    if facts.severity is not None and facts.severity < route.min_severity:
        return f"wants min_severity {route.min_severity}"
    checks = (
        ("categories", route.categories, None if facts.category is None else {facts.category}),
        ("rules", route.rules, None if facts.rule is None else {facts.rule}),
        ("people", route.people, facts.people),
        ("platforms", route.platforms, facts.platforms),
        ("sources", route.sources, None if facts.source is None else {facts.source}),
    )
    for key, wanted, present in checks:
        if wanted and present is not None and wanted.isdisjoint(present):
            return f"wants {key} {', '.join(sorted(wanted))}"
    if facts.coverage and not route.coverage:
        return "coverage is off (a post from an RSS/Atom feed)"
    return None


def channel_wants(channel: ChannelConfig, facts: AlertFacts) -> bool:
    """Whether `channel` gets an alert with these facts: its filters, ANDed across keys and ORed within a
    list, and the rule's own channel list. Health notices reach every channel."""
    return refusal(channel, facts) is None


def facts_of(
    payload: Mapping[str, Any],
    source: str | None = None,
    exchanges: Exchanges | None = None,
    rule_channels: Mapping[str, tuple[str, ...]] | None = None,
    coverage_sources: frozenset[str] | None = None,
) -> AlertFacts:
    """The routing facts of an outbox payload: a hit's (fetched by `source`), an exchange turn's (made by a
    poll of `source`), or a health notice's. A kind routing does not know has no facts, so it reaches every
    channel."""
    kind = payload.get("kind")
    if kind is None:
        return _hit_facts(payload, source, exchanges, rule_channels or {}, coverage_sources)
    if kind == "watch":
        rule = payload["rule"]
        # A spike is about a category, not about whoever wrote the posts it shows as evidence.
        about_people = rule["category"] != "spike"
        return AlertFacts(
            kind=WATCH,
            severity=rule["severity"],
            category=rule["category"],
            rule=rule["id"],
            people=frozenset(payload.get("people", ())) if about_people else None,
            platforms=frozenset(payload.get("platforms", ())) if about_people else None,
        )
    if kind == "exchange":
        exchange = payload["exchange"]
        return AlertFacts(
            kind=EXCHANGE,
            severity=exchange.get("severity"),
            category=EXCHANGE_CATEGORY,
            people=frozenset(exchange.get("people", ())),
            platforms=frozenset(item["post"]["platform"] for item in exchange.get("posts", ())),
            source=source,
        )
    return AlertFacts(kind=_HEALTH_KINDS.get(kind, kind))


def _hit_facts(
    payload: Mapping[str, Any],
    source: str | None,
    exchanges: Exchanges | None,
    rule_channels: Mapping[str, tuple[str, ...]],
    coverage_sources: frozenset[str] | None,
) -> AlertFacts:
    """A hit's facts. It is coverage when its source is one of `coverage_sources` (sources are press when
    configured so, RSS ones by default); without settings, when the post comes from an RSS/Atom feed."""
    rule, post = payload["rule"], payload["post"]
    platform = post["platform"]
    coverage = platform == COVERAGE_PLATFORM if coverage_sources is None else source in coverage_sources
    return AlertFacts(
        kind=HIT,
        severity=rule["severity"],
        category=rule["category"],
        rule=rule["id"],
        people=people_of(exchanges, platform, post["author"]),
        platforms=frozenset({platform}),
        source=source,
        coverage=coverage,
        only_to=rule_channels.get(rule["id"]) or None,
    )


def people_of(exchanges: Exchanges | None, platform: str, author: str) -> frozenset[str]:
    """The ids of the configured people who own this account (any of their accounts, on any platform)."""
    if exchanges is None:
        return frozenset()
    account = f"{platform}:{author}".lower()
    return frozenset(person.id for person in exchanges.people if account in person.accounts)


class Router:
    """The channels each payload goes to, among the channels being delivered (`names`). A name without a
    [[channels]] table (a channel given in code, as tests do) has no filters."""

    def __init__(
        self,
        names: Sequence[str],
        channels: Iterable[ChannelConfig] = (),
        exchanges: Exchanges | None = None,
        rules: Iterable[Rule] = (),
        coverage_sources: Iterable[str] | None = None,
    ) -> None:
        self.names = list(names)
        self.coverage_sources = None if coverage_sources is None else frozenset(coverage_sources)
        self.configs = {channel.name: channel for channel in channels}
        self.exchanges = exchanges
        self.rule_channels = {rule.id: rule.channels for rule in rules if rule.channels}

    @classmethod
    def from_settings(cls, settings: Settings, rules: Sequence[Rule], names: Sequence[str]) -> Router:
        """The router for these settings and rules; ConfigError when a name in either is unknown."""
        check_routes(settings, rules)
        press = [source.name for source in settings.sources if source.coverage]
        return cls(names, settings.channels, settings.exchanges, rules, coverage_sources=press)

    def channels_for(self, payload: Mapping[str, Any], source: str | None = None) -> list[str]:
        """The names of the channels that get this payload, in delivery order."""
        facts = facts_of(payload, source, self.exchanges, self.rule_channels, self.coverage_sources)
        return [
            name
            for name in self.names
            if name not in self.configs or channel_wants(self.configs[name], facts)
        ]


def check_routes(settings: Settings, rules: Sequence[Rule]) -> None:
    """Refuse a rule id or category in a channel's filters that the rule pack lacks, and a channel in a
    rule's `channels` that the settings lack: one ConfigError naming the file and the key."""
    rule_ids = {rule.id for rule in rules} | {MODEL_RULE} | {watch.name for watch in settings.watches}
    categories = {rule.category for rule in rules} | set(CATEGORIES) | {EXCHANGE_CATEGORY} | set(WATCH_TYPES)
    for index, channel in enumerate(settings.channels):
        where = f"{settings.path}: channels[{index}]"
        unknown_rules = sorted(channel.route.rules - rule_ids)
        if unknown_rules:
            raise ConfigError(
                f"{where}.rules: {unknown_rules[0]!r} is not the id of a rule in {settings.rules}"
            )
        unknown_categories = sorted(channel.route.categories - categories)
        if unknown_categories:
            raise ConfigError(
                f"{where}.categories: {unknown_categories[0]!r} is not a category; expected one of: "
                f"{', '.join(sorted(categories))}"
            )
    names = {channel.name for channel in settings.channels}
    for rule in rules:
        unknown_channels = [name for name in rule.channels if name not in names]
        if unknown_channels:
            raise ConfigError(
                f"{rule.file}: rule {rule.id}: channels: {unknown_channels[0]!r} is not the name of a "
                f"[[channels]] table in {settings.path}"
            )
