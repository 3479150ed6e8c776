"""Wiring: settings -> store, detector, sources, channels -> pipeline."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.detect.detector import Detector
from bot.detect.matcher import Matcher, load_rules
from bot.notifiers import Notifier, build_notifier
from bot.pipeline import Pipeline
from bot.routing import Router, check_routes
from bot.sources import Source, build_source
from bot.sources.replay import ReplaySource
from config import Settings, SourceConfig
from config.settings import DetectorSettings
from config.watches import check_categories
from storage import Store

log = logging.getLogger("ringside")


def build_pipeline(
    settings: Settings,
    store: Store,
    paced: bool = True,
    notifiers: Sequence[Notifier] | None = None,
    detector: Detector | None = None,
    sources: dict[str, Source] | None = None,
) -> Pipeline:
    """Everything the service needs, built and validated before the first poll.

    `notifiers` replaces the configured channels (tests, and tools that deliver elsewhere); `detector` one
    already built (commands build it before opening the database, so a bad model file touches nothing);
    `sources` replaces the configured sources (a backfill polls its file alone)."""
    detector = detector or build_detector(settings)
    check_watches(settings, detector)
    if sources is None:
        sources = {config.name: source_from(config, settings, store, paced) for config in settings.sources}
    if notifiers is None:
        notifiers = [build_notifier(config, store) for config in settings.channels]
    if not notifiers:
        log.warning("no channel configured: hits are stored but nobody is alerted")
    pipeline = Pipeline(store, detector, sources, notifiers, **tuned_by(settings, detector, notifiers))
    _say_where_replays_stand(pipeline)
    return pipeline


def check_watches(settings: Settings, detector: Detector) -> None:
    """A spike watch must count a category the loaded rules have, and no watch may be named as a rule;
    ConfigError naming the key if not."""
    categories = {rule.category for rule in detector.matcher.rules}
    rule_ids = {rule.id for rule in detector.matcher.rules}
    check_categories(settings.watches, categories, settings.path, settings.rules, rule_ids)


def source_from(config: SourceConfig, settings: Settings, store: Store, paced: bool = True) -> Source:
    """The source `config` describes, knowing the account ids already resolved and stored."""
    return build_source(
        config, store.account_ids(config.type), paced=paced, data_dir=settings.database.parent
    )


def tuned_by(settings: Settings, detector: Detector, notifiers: Sequence[Notifier]) -> dict[str, Any]:
    """The pipeline's fields that come from the settings, beside its detector, sources and channels: set at
    start and again by a reload (Pipeline.adopt). ConfigError when the routes name a rule, category or
    channel that is not there."""
    return {
        "delivery": settings.delivery,
        "digests": {config.name: config.digest for config in settings.channels if config.digest},
        "intervals": {config.name: config.every for config in settings.sources},
        "watchdog_after": settings.service.watchdog_after,
        "exchanges": settings.exchanges,
        "router": Router.from_settings(settings, detector.matcher.rules, [n.name for n in notifiers]),
        "x_spend": settings.x_spend,
        "watches": settings.watches,
    }


def build_detector(settings: Settings) -> Detector:
    """The configured rules and model, validated, with the names channels and rules give each other
    (bot.routing); ConfigError or ModelError if either cannot be used."""
    detector = detector_from(settings.rules, settings.engine, settings.detector)
    check_routes(settings, detector.matcher.rules)
    return detector


def detector_from(rules: Path, engine: str, config: DetectorSettings) -> Detector:
    """The rules in `rules` and the model `config` names (none when its model is None)."""
    matcher = Matcher(
        load_rules(rules), engine=engine, max_text=config.max_text, max_positions=config.max_positions
    )
    scorer = None
    if config.model:
        from bot.detect.scorer import Scorer  # numpy, only when a model is configured

        scorer = Scorer.load(config.model)
    return Detector(matcher, scorer, config.threshold)


def _say_where_replays_stand(pipeline: Pipeline) -> None:
    """A replay that was fully stored by an earlier run shows nothing new; say so instead of looking stuck."""
    for name, feed in pipeline.feeds():
        source = pipeline.sources[name]
        if isinstance(source, ReplaySource):
            log.info("replay %s: %s", name, source.standing(pipeline.store.feed_state(name, feed).cursor))
