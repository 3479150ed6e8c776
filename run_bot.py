#!/usr/bin/env python3
"""Ringside's command line. The only place where exceptions become messages and exit codes.

Exit codes: see EXIT_CODES.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

# Only what parsing the arguments needs is imported here: `--help` and a bad argument answer at once, and the
# detector, SQLite layer (sqlite-utils brings numpy), metrics and scheduler are imported by the command that
# runs them.
if TYPE_CHECKING:
    from bot.reload import Reloader
    from config import Settings
    from storage import Store

from bot.logs import redact_logs, setup_logging

log = logging.getLogger("ringside")
PROGRESS_EVERY = 5.0  # seconds between two lines of `once` while a paced channel (Slack) works through alerts
EXIT_CODES = """exit codes:
  0  done (once: a feed waiting out a rate limit is paused, not failed)
  1  once ran, but a feed failed to poll, an alert was refused for good (dead), or a channel is paused
     (it refused every alert: its alerts are kept; fix it, then `alerts resume --channel NAME`);
     check-config --online: Threads or Instagram refused a feed; backfill: stopped (Ctrl-C, SIGTERM) or a
     batch failed 3 times; run it again to resume
  2  bad settings, rules, input or database
  141  the reader of the output went away (`report ... | head -1`), as any Unix tool stopped by SIGPIPE"""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit:  # --help (0) or a bad argument (2, its one line already printed)
        return exit.code if isinstance(exit.code, int) else 2
    setup_logging(args.log_level)
    expected = expected_errors()
    try:
        code = args.handler(args)
        sys.stdout.flush()  # here, not at exit, so a reader that went away is seen below
        return code
    except BrokenPipeError:
        # `report ... | head -1`: the reader has what it wanted. Quietly, as a Unix tool stopped by SIGPIPE;
        # stdout goes to devnull so Python's own flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except expected as error:
        print(f"ringside: error: {error}", file=sys.stderr)
        return 2
    except sqlite3.OperationalError as error:
        # A writer (the service, a prune --vacuum) kept the database longer than the 10 s a command waits.
        busy = "locked" in str(error) or "busy" in str(error)
        hint = ": another process kept it busy for 10 s; try again" if busy else ""
        print(f"ringside: error: the database: {error}{hint}", file=sys.stderr)
        return 2


def expected_errors() -> tuple[type[Exception], ...]:
    """The errors a command reports in one line with exit code 2 (bad settings, rules, input or database)."""
    from bot.commands import UsageError
    from bot.detect.errors import CorpusError, ModelError
    from bot.lock import DatabaseInUse
    from config import ConfigError
    from storage import DatabaseError
    from storage.labels import LabelError
    from storage.reports import QueryError

    return (
        ConfigError,
        DatabaseError,
        DatabaseInUse,
        UsageError,
        QueryError,
        ModelError,
        CorpusError,
        LabelError,
    )


def from_commands(name: str, module: str = "bot.commands") -> Callable[[argparse.Namespace], int]:
    """The handler `name` of `module`, imported when the command runs rather than to parse arguments."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), name)(args)

    return run


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (`ringside: error: ...`, exit 2) like every other error;
    `--help` still shows the usage. Subcommands inherit it."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.partition(" ")[2]  # "run_bot.py rules try" or "ringside rules try"
        self.exit(2, f"ringside: error: {command + ': ' if command else ''}{message}\n")


def positive_int(text: str) -> int:
    """argparse type for counts such as --limit: a whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above zero, got {value}")
    return value


def program_name() -> str:
    """What the user typed: `ringside` for the installed console command, else run_bot.py."""
    return "ringside" if Path(sys.argv[0]).name == "ringside" else "run_bot.py"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog=program_name(),
        description="Ringside watches public feeds for challenges and rivalries, keeps every hit in SQLite\n"
        "and alerts your channels. With no command it runs the service.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    backfill = commands.add_parser(
        "backfill",
        help="import a JSONL file of posts of any size (the replay format) in batches, without pacing; "
        "a progress line on stderr; safe while the service runs; run it again to resume after a stop",
    )
    backfill.add_argument("file", type=Path, help="JSONL: one post a line, as a replay file")
    backfill.add_argument(
        "--source",
        default="backfill",
        help="name the posts' feed is stored under, with its cursor (default: backfill)",
    )
    backfill.add_argument(
        "--batch-size", type=positive_int, default=2000, help="posts per transaction (default 2000)"
    )
    backfill.set_defaults(handler=command_backfill)
    check = commands.add_parser(
        "check-config", help="validate the settings and rules; print them with secrets masked"
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask each Threads and Instagram feed once and say which permission a refusal needs "
        "(exit 1 when one is refused)",
    )
    check.set_defaults(handler=command_check_config)
    backtest = commands.add_parser(
        "backtest", help="run the detector (rules and model) over a JSONL file of posts and score it"
    )
    backtest.add_argument(
        "file",
        type=Path,
        nargs="?",
        help="JSONL: one object a line with `text`, optional id, platform, "
        "author, lang, kind, domain and label (flag or none)",
    )
    backtest.add_argument(
        "--model",
        default=None,
        help="model file to score with (default: detector.model in the settings); off: rules alone",
    )
    backtest.add_argument(
        "--db",
        action="store_true",
        help="score the operator's labels stored in the database (run_bot.py label)",
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
    backtest.set_defaults(handler=from_commands("command_backtest"))
    train = commands.add_parser(
        "train",
        help="retrain the learned scorer from the corpus and the operator's labels (needs the train extra)",
    )
    train.add_argument(
        "--corpus", type=Path, default=Path("corpus/train"), help="directory of labelled JSONL files"
    )
    train.add_argument(
        "--out",
        type=Path,
        default=Path("config/model/scorer.json"),
        help="model file to write, and its .npz beside it (point detector.model at it)",
    )
    train.add_argument("--no-labels", action="store_true", help="leave out the operator's labels")
    train.set_defaults(handler=from_commands("command_train"))
    label = commands.add_parser("label", help="store your verdict on a post, for training and backtest --db")
    label.add_argument("target", help="a post key such as x:1671234567890, or an alert id with --alert")
    label.add_argument("label", choices=["flag", "none"])
    label.add_argument("--category", help="challenge, taunt, rivalry, response (flag); none, coverage (none)")
    label.add_argument(
        "--alert", action="store_true", help="TARGET is an alert id (run_bot.py report alerts)"
    )
    label.set_defaults(handler=from_commands("command_label"))
    commands.add_parser(
        "health", help="exit 0 if the running service's heartbeat says it is healthy (Docker's HEALTHCHECK)"
    ).set_defaults(handler=from_commands("command_health"))
    alerts = commands.add_parser(
        "alerts",
        help="the outbox: counts per channel and status, requeue dead alerts, or resume a paused channel",
    )
    alerts.add_argument(
        "action",
        choices=["status", "retry-dead", "resume"],
        help="status: counts; retry-dead: requeue; resume: send a paused channel's alerts again",
    )
    alerts.add_argument("--channel", help="only this channel (retry-dead, resume)")
    alerts.set_defaults(handler=from_commands("command_alerts"))
    mute = commands.add_parser(
        "mute", help="stop alerting a rule or an author for a while (hits are still stored)"
    )
    who = mute.add_mutually_exclusive_group(required=True)
    who.add_argument("--rule", help="a rule id")
    who.add_argument("--author", help="an account: elonmusk or @elonmusk (every platform), x:elonmusk (one)")
    who.add_argument("--list", action="store_true", help="show the mutes in force")
    mute.add_argument(
        "--for", dest="duration", default="1h", help="how long, such as 30m, 2h, 7d (default 1h)"
    )
    mute.set_defaults(handler=from_commands("command_mute"))
    report = commands.add_parser("report", help="a report from the database (report --list names them)")
    report.add_argument("name", nargs="?", help="the report, such as hits-by-day or latest-hits")
    report.add_argument("--list", action="store_true", help="name every report with a line about it")
    add_output_options(report, since_help="posts since: 7d, 12h, or a date such as 2026-01-01", bars=True)
    report.add_argument("--until", help="before this: a duration ago or a date")
    report.add_argument(
        "--account",
        help="only this account: elonmusk, @elonmusk or x:elonmusk (exchanges: also a person's id; "
        "source-health: a feed)",
    )
    report.set_defaults(handler=from_commands("command_report"))
    search = commands.add_parser(
        "search", help="full-text search of stored posts: 'cage NEAR/3 match', \"send me\""
    )
    search.add_argument("query", help='FTS5 syntax: words, "phrases", OR, NOT, prefix*, a NEAR/n b')
    add_output_options(search, since_help="posted since: 7d or a date")
    search.set_defaults(handler=from_commands("command_search"))
    prune = commands.add_parser(
        "prune", help="delete old posts that have no hit (hits, alerts, exchanges stay)"
    )
    prune.add_argument("--older-than", required=True, help="such as 90d")
    prune.add_argument("--vacuum", action="store_true", help="then give the space back to the file system")
    prune.set_defaults(handler=from_commands("command_prune"))
    add_rules_command(commands)
    unmute = commands.add_parser("unmute", help="end a mute now")
    who = unmute.add_mutually_exclusive_group(required=True)
    who.add_argument("--rule", help="a rule id")
    who.add_argument("--author", help="an author's handle")
    unmute.set_defaults(handler=from_commands("command_unmute"))
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        args.handler = command_run
    return args


def add_rules_command(commands: argparse._SubParsersAction) -> None:
    """`rules try QUERY` and `rules diff [DIR]`: rule previews on the stored posts (bot.previews)."""
    rules = commands.add_parser(
        "rules", help="preview rules on the stored posts: try a query, or diff a rules directory"
    )
    actions = rules.add_subparsers(title="actions", metavar="ACTION", required=True)
    try_ = actions.add_parser(
        "try", help="list the stored posts a query in the rule language would hit, matched words marked"
    )
    try_.add_argument("query", help='the rule language: "cage match" OR octagon, cage NEAR/3 fight, ...')
    add_history_filters(try_)
    try_.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="show at most N posts (default 20)"
    )
    try_.add_argument("--oldest-first", action="store_true", help="oldest posts first (default: newest)")
    try_.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    try_.set_defaults(handler=from_commands("command_rules_try", "bot.previews"))
    diff = actions.add_parser(
        "diff",
        help="per rule, the hits the rules in DIR gain and lose over the stored posts, against the hits "
        "stored (or against the rules in --against)",
    )
    diff.add_argument(
        "directory",
        nargs="?",
        type=Path,
        metavar="DIR",
        help="rules directory (default: matcher.rules in the settings)",
    )
    diff.add_argument(
        "--against",
        type=Path,
        metavar="OLD_DIR",
        help="compare with the rules in OLD_DIR, not the stored hits",
    )
    add_history_filters(diff)
    diff.add_argument(
        "--examples",
        type=positive_int,
        default=3,
        metavar="N",
        help="example posts per rule gained and lost (default 3)",
    )
    diff.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    diff.set_defaults(handler=from_commands("command_rules_diff", "bot.previews"))


def add_history_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", metavar="WHEN", help="posted since: 30d, 12h, or a date such as 2026-01-01"
    )
    parser.add_argument(
        "--account",
        action="append",
        metavar="NAME",
        help="only posts by this account: elonmusk, @elonmusk or x:elonmusk (repeat for more)",
    )


def command_run(args: argparse.Namespace) -> int:
    from bot.app import build_detector, build_pipeline
    from bot.lock import ServiceLock
    from bot.reload import Reloader
    from bot.service import Service
    from config import load_settings
    from config.settings import environ_for_reload
    from storage import Store

    started_with = dict(os.environ)  # before .env is loaded into it: a reload reads .env afresh
    settings = load_settings(args.config)
    redact_logs(settings)
    # Before the database is opened (and migrated): a bad model file changes nothing.
    detector = build_detector(settings)
    with ServiceLock(settings.database):
        store = Store.open(settings.database)
        try:
            service = Service(settings, build_pipeline(settings, store, paced=True, detector=detector))
            log.info("database: %s", settings.database)
            reloader = Reloader(service, lambda: environ_for_reload(started_with))
            reload_on_sighup(reloader)
            reloader.start()
            try:
                finished = service.run_until(stop_on_signals())
            finally:
                reloader.stop()
            if not finished:
                # A job outlived the grace and still uses the store: closing it would fail that job midway.
                # Leaving now is what a SIGKILL does, which loses nothing; the OS releases the lock.
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
        # Not stop.set() here: the handler runs in the main thread, which may be inside stop.wait() holding
        # the event's lock at that instant, and set() would wait for it forever (a rare hang at SIGTERM).
        threading.Thread(target=stop.set, name="stop", daemon=True).start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


def reload_on_sighup(reloader: Reloader) -> None:
    """SIGHUP reloads the settings and rules (`kill -HUP PID`, `docker kill -s HUP NAME`)."""

    def handle(_signum: int, _frame: object) -> None:
        # From a short thread, as for SIGTERM: the handler must not take a lock the main thread may hold.
        threading.Thread(target=reloader.request, args=["SIGHUP"], name="sighup", daemon=True).start()

    signal.signal(signal.SIGHUP, handle)


def command_once(args: argparse.Namespace) -> int:
    """Poll every feed once and deliver; 1 when a feed failed or a channel needs a look (see EXIT_CODES)."""
    from bot.app import build_detector, build_pipeline
    from bot.lock import ServiceLock
    from config import load_settings
    from storage import Store

    settings = load_settings(args.config)
    redact_logs(settings)
    # Before the database is opened (and migrated): a bad model file changes nothing.
    detector = build_detector(settings)
    with ServiceLock(settings.database), Store.open(settings.database) as store:
        pipeline = build_pipeline(settings, store, paced=False, detector=detector)
        pipeline.courier.progress_every = PROGRESS_EVERY
        not_polled = [(s, f) for s, f in pipeline.feeds() if pipeline.poll_until_caught_up(s, f) is None]
        failed = [f"{s}:{f}" for s, f in not_polled if not feed_is_paused(store, s, f)]
        pipeline.evaluate_watches()
        delivered = pipeline.deliver_all()
        counts = store.counts()
        paused_channels = store.paused_channels()
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
    dead = {name: c.dead for name, c in delivered.items() if c.dead}
    if dead:
        log.warning(
            "once: %d alert(s) refused for good or given up (dead): %s; run_bot.py alerts status shows why",
            sum(dead.values()),
            ", ".join(dead),
        )
    for channel, reason in paused_channels.items():
        log.warning("once: channel %s: %s", channel, reason)
    return 1 if failed or dead or paused_channels else 0


def command_backfill(args: argparse.Namespace) -> int:
    """Store FILE batch by batch under --source, then deliver if no service runs (see bot.backfill)."""
    from bot.app import build_detector
    from bot.backfill import backfill
    from bot.commands import UsageError
    from bot.lock import DatabaseInUse, ServiceLock
    from config import load_settings
    from storage import Store

    settings = load_settings(args.config)
    redact_logs(settings)
    detector = build_detector(settings)
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    lock = ServiceLock(settings.database)
    try:
        lock.acquire()
        holder = None
    except DatabaseInUse as error:
        lock, holder = None, str(error)
    try:
        with Store.open(settings.database) as store:
            stop = stop_on_signals()  # Ctrl-C or SIGTERM: stop after the batch in hand
            return backfill(
                settings, store, detector, args.file, args.source, args.batch_size, holder, stop.is_set
            )
    finally:
        if lock is not None:
            lock.release()


def feed_is_paused(store: Store, source: str, feed: str) -> bool:
    """True, with one line saying until when, when the feed waits out a rate limit: a pause, not a failure."""
    from bot.timeutil import utcnow

    until = store.feed_state(source, feed).paused_until
    if until is None or until <= utcnow():
        return False
    log.info("once: %s:%s is rate limited: paused until %s", source, feed, f"{until:%Y-%m-%d %H:%M:%S} UTC")
    return True


def command_check_config(args: argparse.Namespace) -> int:
    """Print the settings (secrets masked) as JSON; on stderr, the channels each rule reaches, a warning
    for each rule (or press source) that reaches none, and the verdict. Warnings leave the exit code 0."""
    from bot.app import build_detector, check_watches
    from bot.reach import reach
    from config import load_settings

    settings = load_settings(args.config)
    detector = build_detector(settings)
    rules = detector.matcher.rules  # read and compiled once, by the detector
    check_watches(settings, detector)
    routes = reach(settings, rules, model=detector.scorer is not None)
    shown = settings.masked()
    shown["matcher"]["rule_count"] = len(rules)
    shown["routes"] = routes.shown()
    model = "no model (rules alone)"
    if detector.scorer is not None:
        trained = detector.scorer.meta.get("trained_on", {})
        shown["detector"]["effective_threshold"] = detector.threshold
        shown["detector"]["trained_on"] = trained
        model = f"the model {settings.detector.model} ({trained.get('posts', '?')} posts)"
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    for line in routes.lines + routes.warnings:
        print(line, file=sys.stderr)
    print(
        f"ok: {settings.path}, {len(rules)} rule(s) in {settings.rules} and {model} are valid",
        file=sys.stderr,
    )
    for watch in settings.watches:
        print(f"watch: {watch.describe()}", file=sys.stderr)
    return check_feeds_online(settings) if getattr(args, "online", False) else 0


def check_feeds_online(settings: Settings) -> int:
    """Ask each Threads and Instagram feed once; one line per feed; 1 when any was refused."""
    from bot.sources import SourceError, build_source

    redact_logs(settings)
    refused = 0
    asked = [config for config in settings.sources if config.type in ("threads", "instagram")]
    if not asked:
        print("online: no Threads or Instagram source to ask", file=sys.stderr)
    for config in asked:
        source = build_source(config, {}, paced=False, data_dir=settings.database.parent)
        for feed in source.feeds():
            try:
                line = source.probe(feed)  # type: ignore[attr-defined]
            except SourceError as error:
                refused += 1
                line = f"refused: {error}"
            print(f"online: {config.name}:{feed}: {line}", file=sys.stderr)
    return 1 if refused else 0


def add_output_options(parser: argparse.ArgumentParser, since_help: str, bars: bool = False) -> None:
    parser.add_argument("--since", help=since_help)
    if bars:  # no default: a report by day draws bars when stdout is a terminal, a table otherwise
        parser.add_argument(
            "--format",
            choices=["table", "csv", "json", "bars"],
            help="default: bars on a terminal for hits-by-day and rivalry-hits-by-day, else table",
        )
    else:
        parser.add_argument("--format", choices=["table", "csv", "json"], default="table")
    parser.add_argument("--limit", type=positive_int, default=None, help="at most this many rows")


if __name__ == "__main__":
    sys.exit(main())
