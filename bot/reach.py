"""What check-config says of routing: the channels each rule, the model, exchange turns and each watch reach,
and a warning for what reaches none.

Reach is judged from what is known before any post: a rule's category, its severity as written (a loaded
model can move a hit's severity by one) and its own `channels`. Filters on people, platforms and sources
depend on the post, so a channel that has them is listed with "only ...".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.detect.rules import SILENT_CATEGORIES, Rule
from bot.models import MODEL_RULE
from bot.routing import EXCHANGE, HIT, WATCH, AlertFacts, refusal
from config.routes import EXCHANGE_CATEGORY
from config.settings import ChannelConfig, Settings

_POST_FILTERS = ("people", "platforms", "sources")


@dataclass
class Reach:
    """Channels reached by each rule id (and by the model and exchange turns when they alert), the lines
    that say so, and one warning line per thing that reaches no channel."""

    rules: dict[str, list[str]] = field(default_factory=dict)
    model: list[str] | None = None
    exchanges: list[str] | None = None
    watches: dict[str, list[str]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def shown(self) -> dict[str, object]:
        shown: dict[str, object] = {"rules": self.rules}
        if self.model is not None:
            shown["model"] = self.model
        if self.exchanges is not None:
            shown["exchanges"] = self.exchanges
        if self.watches:
            shown["watches"] = self.watches
        return shown


def reach(settings: Settings, rules: Sequence[Rule], model: bool) -> Reach:
    """Where each alerting rule's hits go under these settings; `model`: a learned scorer is loaded."""
    found = Reach()
    channels = settings.channels
    if not channels:
        found.warnings.append("warning: no channel configured: hits are stored but nobody is alerted")
    for rule in rules:
        if rule.category in SILENT_CATEGORIES:
            found.lines.append(f"route: rule {rule.id} ({rule.category}): silent, no alert of its own")
            continue
        facts = AlertFacts(HIT, rule.severity, rule.category, rule.id, only_to=rule.channels or None)
        what = f"rule {rule.id} ({rule.category}, severity {rule.severity})"
        found.rules[rule.id] = _reached(found, what, channels, facts)
    if model:
        found.model = _reached(found, "model (any category)", channels, AlertFacts(HIT, rule=MODEL_RULE))
    if settings.exchanges.rivalries:
        facts = AlertFacts(EXCHANGE, category=EXCHANGE_CATEGORY)
        found.exchanges = _reached(found, "exchange turns", channels, facts)
    for watch in settings.watches:  # its people and platforms are the alert's: "only ..." filters
        facts = AlertFacts(WATCH, watch.severity, watch.type, watch.name)
        what = f"watch {watch.name} ({watch.type}, severity {watch.severity})"
        found.watches[watch.name] = _reached(found, what, channels, facts)
    _warn_of_unheard_press(found, settings)
    return found


def _reached(found: Reach, what: str, channels: Sequence[ChannelConfig], facts: AlertFacts) -> list[str]:
    reached = [channel for channel in channels if refusal(channel, facts) is None]
    if reached:
        found.lines.append(f"route: {what} -> {', '.join(_with_conditions(c, facts) for c in reached)}")
    elif channels:
        found.lines.append(f"route: {what} -> no channel")
        found.warnings.append(f"warning: {what} reaches no channel ({_why_none(channels, facts)})")
    return [channel.name for channel in reached]


def _why_none(channels: Sequence[ChannelConfig], facts: AlertFacts) -> str:
    """ "the rule sends only to pager; pager: wants min_severity 4" """
    if facts.only_to is None:
        return "; ".join(f"{c.name}: {refusal(c, facts)}" for c in channels)
    named = [c for c in channels if c.name in facts.only_to]
    reasons = [f"{c.name}: {refusal(c, facts)}" for c in named]
    return "; ".join([f"the rule sends only to {', '.join(facts.only_to)}", *reasons])


def _with_conditions(channel: ChannelConfig, facts: AlertFacts) -> str:
    """ "slack-main (only people musk; platforms x)" when the channel also filters on the post, or on a
    severity or category that only the alert will have (the model's hits, exchange turns)."""
    route = channel.route
    conditions = []
    if facts.severity is None and route.min_severity > 1:
        conditions.append(f"min_severity {route.min_severity}")
    if facts.category is None and route.categories:
        conditions.append(f"categories {', '.join(sorted(route.categories))}")
    conditions += [
        f"{key} {', '.join(sorted(getattr(route, key)))}" for key in _POST_FILTERS if getattr(route, key)
    ]
    return f"{channel.name} (only {'; '.join(conditions)})" if conditions else channel.name


def _warn_of_unheard_press(found: Reach, settings: Settings) -> None:
    """An RSS source's hits are coverage: say so when no channel opted in, as they would alert nobody."""
    if not settings.channels or any(channel.route.coverage for channel in settings.channels):
        return
    for source in settings.sources:
        if source.coverage:
            found.warnings.append(
                f"warning: source {source.name} ({source.type}): its hits are press coverage and no channel "
                "has coverage = true, so they are stored but nobody is alerted"
            )
