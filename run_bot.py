#!/usr/bin/env python3
"""Ringside's command line. The only place where exceptions become messages and exit codes.

Exit codes: 0 done; 1 ran, but some feed failed (once); 2 bad settings, rules, input or database.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from bot.app import build_pipeline
from config import DEFAULT_RULES, ConfigError, load_settings
from storage import DatabaseError, Store

log = logging.getLogger("ringside")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        return args.handler(args)
    except (ConfigError, DatabaseError) as error:
        print(f"ringside: error: {error}", file=sys.stderr)
        return 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run_bot.py",
        description="Ringside watches public feeds for challenges and rivalries, keeps every hit in SQLite "
        "and alerts your channels. With no command it runs the service.",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="settings file (default: config/ringside.toml)"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands.add_parser("run", help="run the service until Ctrl-C or SIGTERM (the default)").set_defaults(
        handler=command_run
    )
    commands.add_parser(
        "once", help="poll every feed once, deliver, and exit (for cron and scripts)"
    ).set_defaults(handler=command_once)
    commands.add_parser(
        "check-config", help="validate the settings and rules; print them with secrets masked"
    ).set_defaults(handler=command_check_config)
    backtest = commands.add_parser("backtest", help="run the rules over a JSONL file of posts and score them")
    backtest.add_argument(
        "file",
        type=Path,
        help="JSONL: one object a line with `text`, optional id, platform, "
        "author, lang, kind and label (flag or none)",
    )
    backtest.add_argument(
        "--rules",
        type=Path,
        default=None,
        help="rules directory (default: the one in the settings, else config/rules)",
    )
    backtest.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    backtest.set_defaults(handler=command_backtest)
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        args.handler = command_run
    return args


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )
    # APScheduler logs every job start and finish at INFO: too much for a service that runs for months.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))


def command_run(args: argparse.Namespace) -> int:
    from bot.service import Service

    settings = load_settings(args.config)
    store = Store.open(settings.database)
    try:
        service = Service(settings, build_pipeline(settings, store, paced=True))
        log.info("database: %s", settings.database)
        service.run_until(stop_on_signals())
    finally:
        store.close()
    log.info("stopped")
    return 0


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C); a second signal exits at once."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise SystemExit(1)
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def command_once(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    store = Store.open(settings.database)
    try:
        pipeline = build_pipeline(settings, store, paced=False)
        failed = [f"{s}:{f}" for s, f in pipeline.feeds() if pipeline.poll(s, f) is None]
        delivered = pipeline.deliver_all()
        counts = store.counts()
    finally:
        store.close()
    sent = sum(c.sent for c in delivered.values())
    log.info(
        "once: %d post(s), %d hit(s), %d alert(s) stored in total; %d sent now",
        counts["posts"],
        counts["hits"],
        counts["alerts"],
        sent,
    )
    if failed:
        log.warning("once: %d feed(s) did not poll: %s", len(failed), ", ".join(failed))
        return 1
    return 0


def command_check_config(args: argparse.Namespace) -> int:
    from bot.matcher import load_rules

    settings = load_settings(args.config)
    rules = load_rules(settings.rules)
    shown = settings.masked()
    shown["matcher"]["rule_count"] = len(rules)
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    print(f"ok: {settings.path} and {len(rules)} rule(s) in {settings.rules} are valid", file=sys.stderr)
    return 0


def command_backtest(args: argparse.Namespace) -> int:
    from bot.backtest import render_json, render_text, run_backtest
    from bot.matcher import Matcher, load_rules

    rules_dir = args.rules or _rules_from_settings(args.config)
    if not args.file.is_file():
        raise ConfigError(f"{args.file}: backtest file not found")
    outcome = run_backtest(args.file, Matcher(load_rules(rules_dir)))
    for problem in outcome.skipped:
        log.warning("%s", problem)
    if args.json:
        print(json.dumps(render_json(outcome), ensure_ascii=False))
    else:
        print(render_text(outcome))
    return 0


def _rules_from_settings(config: Path | None) -> Path:
    """The rules directory the settings name; the shipped one when there are no settings to read."""
    try:
        return load_settings(config).rules
    except ConfigError:
        if config is not None:
            raise
        return DEFAULT_RULES


if __name__ == "__main__":
    sys.exit(main())
