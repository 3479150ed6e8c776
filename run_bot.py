#!/usr/bin/env python3
"""Ringside's command line. The only place where exceptions become messages and exit codes.

Exit codes: 0 done; 1 ran, but some feed failed (once); 2 bad settings, rules, input or database.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from bot.app import build_pipeline
from bot.timeutil import parse_datetime, parse_duration, utcnow
from config import DEFAULT_RULES, ConfigError, Settings, load_settings
from storage import DatabaseError, Store
from storage.reports import QueryError

log = logging.getLogger("ringside")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        return args.handler(args)
    except (ConfigError, DatabaseError, UsageError, QueryError) as error:
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
    backtest.add_argument(
        "--context",
        action="store_true",
        help="replay the posts in time order through exchange detection with the configured people "
        "(lines need platform, author, created_at; reply_to, quote_of, mentions optional)",
    )
    backtest.set_defaults(handler=command_backtest)
    commands.add_parser(
        "health", help="exit 0 if the running service's heartbeat says it is healthy (Docker's HEALTHCHECK)"
    ).set_defaults(handler=command_health)
    alerts = commands.add_parser(
        "alerts", help="the outbox: counts per channel and status, or requeue dead alerts"
    )
    alerts.add_argument(
        "action", choices=["status", "retry-dead"], help="status: counts; retry-dead: requeue"
    )
    alerts.add_argument("--channel", help="only this channel (retry-dead)")
    alerts.set_defaults(handler=command_alerts)
    mute = commands.add_parser(
        "mute", help="stop alerting a rule or an author for a while (hits are still stored)"
    )
    who = mute.add_mutually_exclusive_group(required=True)
    who.add_argument("--rule", help="a rule id")
    who.add_argument("--author", help="an author's handle")
    who.add_argument("--list", action="store_true", help="show the mutes in force")
    mute.add_argument(
        "--for", dest="duration", default="1h", help="how long, such as 30m, 2h, 7d (default 1h)"
    )
    mute.set_defaults(handler=command_mute)
    report = commands.add_parser("report", help="a report from the database (report --list names them)")
    report.add_argument("name", nargs="?", help="the report, such as hits-by-day or latest-hits")
    report.add_argument("--list", action="store_true", help="name every report with a line about it")
    add_output_options(report, since_help="posts since: 7d, 12h, or a date such as 2026-01-01")
    report.add_argument("--until", help="before this: a duration ago or a date")
    report.add_argument("--account", help="only this account (or, for source-health, this feed)")
    report.set_defaults(handler=command_report)
    search = commands.add_parser(
        "search", help="full-text search of stored posts: 'cage NEAR fight', \"send me\""
    )
    search.add_argument("query", help='FTS5 syntax: words, "phrases", OR, NOT, prefix*, a NEAR/n b')
    add_output_options(search, since_help="posted since: 7d or a date")
    search.set_defaults(handler=command_search)
    prune = commands.add_parser(
        "prune", help="delete old posts that have no hit (hits, alerts, exchanges stay)"
    )
    prune.add_argument("--older-than", required=True, help="such as 90d")
    prune.add_argument("--vacuum", action="store_true", help="then give the space back to the file system")
    prune.set_defaults(handler=command_prune)
    unmute = commands.add_parser("unmute", help="end a mute now")
    who = unmute.add_mutually_exclusive_group(required=True)
    who.add_argument("--rule", help="a rule id")
    who.add_argument("--author", help="an author's handle")
    unmute.set_defaults(handler=command_unmute)
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        args.handler = command_run
    return args


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json), for log collectors."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    logging.basicConfig(level=level, handlers=[handler])
    # APScheduler logs every job start and finish at INFO: too much for a service that runs for months.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    # urllib3 logs request paths at DEBUG, and a Slack webhook's path is its secret.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class RedactSecrets(logging.Filter):
    """Replaces every configured secret value in log records with ****, whatever logged it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "****")
            record.msg, record.args = message, None
        return True


def redact_logs(settings: Settings) -> None:
    """Install RedactSecrets on the root handlers, for the secrets these settings hold."""
    values = [s.reveal() for s in settings.secrets()]
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets(values))


def command_run(args: argparse.Namespace) -> int:
    from bot.service import Service

    settings = load_settings(args.config)
    redact_logs(settings)
    store = Store.open(settings.database)
    try:
        service = Service(settings, build_pipeline(settings, store, paced=True))
        log.info("database: %s", settings.database)
        service.run_until(stop_on_signals())
        if service.scheduler.running:  # a job outlived the grace: it holds the database; leave it to the OS
            log.info("stopped")
            logging.shutdown()
            os._exit(0)
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
    redact_logs(settings)
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
    from bot.backtest import render_json, render_text, run_backtest, run_context_backtest
    from bot.matcher import Matcher, load_rules

    rules_dir = args.rules or _rules_from_settings(args.config)
    if not args.file.is_file():
        raise ConfigError(f"{args.file}: backtest file not found")
    matcher = Matcher(load_rules(rules_dir))
    if args.context:
        outcome = run_context_backtest(args.file, matcher, load_settings(args.config).exchanges)
    else:
        outcome = run_backtest(args.file, matcher)
    for problem in outcome.skipped:
        log.warning("%s", problem)
    if args.json:
        print(json.dumps(render_json(outcome), ensure_ascii=False))
    else:
        print(render_text(outcome))
    return 0


class UsageError(Exception):
    """A command-line value is wrong; the message names the option."""


def add_output_options(parser: argparse.ArgumentParser, since_help: str) -> None:
    parser.add_argument("--since", help=since_help)
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--limit", type=int, default=None, help="at most this many rows")


def parse_moment(option: str, value: str | None) -> datetime | None:
    """`7d` (that long ago) or an ISO date or time; UsageError naming the option otherwise."""
    if value is None:
        return None
    try:
        return utcnow() - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        return parse_datetime(value)
    except ValueError:
        raise UsageError(
            f"{option}: expected a duration such as 7d or 12h, or a date such as 2026-01-01; got {value!r}"
        ) from None


def command_report(args: argparse.Namespace) -> int:
    from storage.reports import REPORTS

    if args.list or not args.name:
        width = max(len(name) for name in REPORTS)
        for name, report in REPORTS.items():
            print(f"{name:<{width}}  {report.description} (view {report.view})")
        return 0
    if args.name not in REPORTS:
        raise UsageError(f"report {args.name!r}: no such report; run_bot.py report --list names them")
    since, until = parse_moment("--since", args.since), parse_moment("--until", args.until)
    limit = args.limit if args.limit is not None else (50 if args.name == "latest-hits" else None)
    store = Store.open(load_settings(args.config).database, create=False)
    try:
        table = store.report(args.name, since, until, args.account, limit)
    finally:
        store.close()
    print_table(table.columns, table.rows, args.format)
    return 0


def command_search(args: argparse.Namespace) -> int:
    store = Store.open(load_settings(args.config).database, create=False)
    try:
        table = store.search(args.query, parse_moment("--since", args.since), args.limit or 50)
    finally:
        store.close()
    print_table(table.columns, table.rows, args.format)
    return 0


def command_prune(args: argparse.Namespace) -> int:
    try:
        older_than = timedelta(seconds=parse_duration(args.older_than))
    except ValueError as error:
        raise UsageError(f"--older-than: {error}") from None
    store = Store.open(load_settings(args.config).database, create=False)
    try:
        removed = store.prune(older_than, vacuum=args.vacuum)
    finally:
        store.close()
    print(
        f"removed {removed['posts']} post(s) without a hit and {removed['runs']} poll record(s) older than "
        f"{args.older_than}" + ("; vacuumed" if args.vacuum else "")
    )
    return 0


def print_table(columns: list[str], rows: list[tuple], form: str) -> None:
    """Rows as an aligned table for a terminal, or clean CSV or JSON for pipes."""
    if form == "json":
        print(
            json.dumps([dict(zip(columns, row, strict=True)) for row in rows], ensure_ascii=False, indent=1)
        )
        return
    if form == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    cells = [columns] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) for i in range(len(columns))
    ]
    for index, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if n else c.ljust(w) for c, w, n in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))
    if not rows:
        print("(no rows)")


def _cell(value: object, width: int = 60) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def command_health(args: argparse.Namespace) -> int:
    from bot.health import check_heartbeat, heartbeat_path

    settings = load_settings(args.config)
    healthy, message = check_heartbeat(heartbeat_path(settings.database))
    print(message)
    return 0 if healthy else 1


def command_alerts(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    store = Store.open(settings.database, create=False)
    try:
        if args.action == "retry-dead":
            count = store.retry_dead(args.channel)
            print(f"requeued {count} dead alert(s)" + (f" of channel {args.channel}" if args.channel else ""))
            return 0
        rows = store.outbox_summary()
    finally:
        store.close()
    print(f"{'channel':<16} {'status':<8} {'alerts':>7}  last error")
    for channel, status, count, error in rows:
        print(f"{channel:<16} {status:<8} {count:>7}  {error if status == 'dead' and error else ''}")
    return 0


def command_mute(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    store = Store.open(settings.database)
    try:
        if args.list:
            for kind, name, until in store.mutes():
                print(f"{kind} {name} muted until {until:%Y-%m-%d %H:%M} UTC")
            return 0
        try:
            seconds = parse_duration(args.duration)
        except ValueError as error:
            raise ConfigError(f"--for: {error}") from None
        until = utcnow() + timedelta(seconds=seconds)
        store.mute(until, rule_id=args.rule, author=args.author)
    finally:
        store.close()
    what = f"rule {args.rule}" if args.rule else f"author @{args.author.lstrip('@')}"
    print(f"{what} muted until {until:%Y-%m-%d %H:%M} UTC: hits are stored, not sent")
    return 0


def command_unmute(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    store = Store.open(settings.database)
    try:
        ended = store.unmute(rule_id=args.rule, author=args.author)
    finally:
        store.close()
    what = f"rule {args.rule}" if args.rule else f"author @{args.author.lstrip('@')}"
    print(f"{what}: {ended} mute(s) ended" if ended else f"{what} was not muted")
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
