"""The commands that read or tend the database: backtest, health, alerts, mute, report, search, prune.

Each raises plain exceptions (ConfigError, DatabaseError, UsageError, QueryError) where a problem is found;
run_bot.py turns them into one line and an exit code.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bot.models import parse_account
from bot.terminal import json_escaped, printable
from bot.timeutil import parse_datetime, parse_duration, utcnow
from config import DEFAULT_RULES, ConfigError, Settings, load_settings
from storage import Store

if TYPE_CHECKING:
    from storage.reports import Chart, Table

log = logging.getLogger("ringside")


def command_backtest(args: argparse.Namespace) -> int:
    from bot.backtest import (
        cases_from_verdicts,
        render_json,
        render_text,
        run_backtest,
        run_context_backtest,
        score_cases,
    )

    if args.file is None and not args.db:
        raise UsageError("backtest: name a JSONL file, or --db to score the operator's labels")
    if args.file is not None and not args.file.is_file():
        raise UsageError(f"{args.file}: backtest file not found")
    settings = load_settings(args.config) if (args.context or args.db) else _settings_if_any(args.config)
    detector = _detector(settings, args.rules, args.model)
    if args.db:
        with Store.open(settings.database, create=False, readonly=True) as store:
            outcome = score_cases(cases_from_verdicts(store.verdicts()), detector)
    elif args.context:
        outcome = run_context_backtest(args.file, detector, settings.exchanges)
    else:
        outcome = run_backtest(args.file, detector)
    for problem in outcome.skipped:
        log.warning("%s", problem)
    if args.json:
        print(json.dumps(render_json(outcome), ensure_ascii=False))
    else:
        print(render_text(outcome))
    return 0


def _detector(settings: Settings | None, rules: Path | None, model: str | None):  # type: ignore[no-untyped-def]
    """The detector a command judges with: the settings' (or the shipped rules and model when there are no
    settings), with --rules and --model ("off": none) swapped in."""
    from dataclasses import replace

    from bot.app import detector_from
    from config.settings import DetectorSettings

    config = settings.detector if settings else DetectorSettings()
    if model is not None:
        config = replace(config, model=None if model == "off" else Path(model))
    engine = settings.engine if settings else "pyahocorasick"
    return detector_from(rules or (settings.rules if settings else DEFAULT_RULES), engine, config)


def command_train(args: argparse.Namespace) -> int:
    """Retrain the scorer from corpus/train plus the operator's labels; write the model files."""
    from bot.detect.corpus import Example, digest, read_dir
    from bot.detect.train import OPERATOR_WEIGHT, train

    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise UsageError(
            "train needs scikit-learn: pip install 'ringside[train]', or run: make train"
        ) from None
    if not sorted(args.corpus.glob("*.jsonl")):
        raise UsageError(f"--corpus: no *.jsonl files in {args.corpus}")
    if args.out.suffix != ".json":
        raise UsageError(
            f"--out: a model file is NAME.json (its arrays go to NAME.npz beside it), got {args.out}"
        )
    corpus = read_dir(args.corpus)
    verdicts = []
    if not args.no_labels:
        settings = _settings_if_any(args.config)
        if settings and Path(settings.database).is_file():
            with Store.open(settings.database, create=False, readonly=True) as store:
                verdicts = store.verdicts()
    operator = [
        Example(
            v.text,
            v.label,
            v.category or "",  # no category given: the flag model learns from it, the category head does not
            v.lang or "?",
            "operator",
            "operator",
            v.post_key,
            weight=OPERATOR_WEIGHT,
        )
        for v in verdicts
    ]
    files = sorted(args.corpus.glob("*.jsonl"))
    meta = {
        "trained_on": {
            "corpus": str(args.corpus),
            "corpus_sha256": digest(files),
            "posts": len(corpus),
            "operator_labels": len(operator),
            "operator_weight": OPERATOR_WEIGHT,
        }
    }
    log.info("training on %d corpus posts and %d operator labels", len(corpus), len(operator))
    scorer = train(corpus + operator, meta=meta)
    try:
        scorer.save(args.out)
    except OSError as error:
        raise UsageError(f"--out: cannot write {args.out}: {error.strerror}") from None
    cv = scorer.meta.get("cross_validation", {})
    print(
        f"wrote {args.out} and {args.out.with_suffix('.npz').name}: threshold {scorer.threshold:.2f}, "
        f"cross-validated (by writer) precision={cv.get('precision')} recall={cv.get('recall')} "
        f"f1={cv.get('f1')}"
    )
    return 0


def command_label(args: argparse.Namespace) -> int:
    """Store the operator's verdict on a post (by key, or by alert id with --alert)."""
    from bot.detect.corpus import FLAG_CATEGORIES, NONE_CATEGORIES

    allowed = FLAG_CATEGORIES if args.label == "flag" else NONE_CATEGORIES
    if args.category is not None and args.category not in allowed:
        raise UsageError(
            f"--category: with {args.label}, expected one of {', '.join(allowed)}; got {args.category!r}"
        )
    with Store.open(load_settings(args.config).database, create=False) as store:
        if args.alert:
            if not args.target.isdigit():
                raise UsageError(f"--alert: expected an alert id (a number), got {args.target!r}")
            post_key, version = store.post_of_alert(int(args.target))
        else:
            post_key, version = args.target, None
        verdict = store.save_label(
            post_key, args.label, args.category, source="alert" if args.alert else "cli", version=version
        )
        total = len(store.verdicts())
    print(
        f"{verdict.post_key}: labelled {verdict.label}"
        + (f" ({verdict.category})" if verdict.category else "")
        + f"; {total} label(s) stored; run_bot.py train adds them to the corpus"
    )
    return 0


class UsageError(Exception):
    """A command-line value is wrong; the message names the option."""


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
    except (ValueError, OverflowError):  # OverflowError: a date whose UTC time is past year 9999
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
    if args.account is not None:
        _account("--account", args.account)
    limit = args.limit if args.limit is not None else (50 if args.name == "latest-hits" else None)
    chart = REPORTS[args.name].chart
    if args.format == "bars" and chart is None:
        charts = " and ".join(name for name, report in REPORTS.items() if report.chart)
        raise UsageError(f"--format bars: report {args.name!r} has no bars; {charts} do")
    settings = load_settings(args.config)
    spend = settings.x_spend
    with Store.open(settings.database, create=False, readonly=True) as store:
        # A chart's rows are cut after its empty days are added, so --limit counts the rows printed.
        table = store.report(
            args.name,
            since,
            until,
            args.account,
            limit if chart is None else None,
            x_price=spend.price_per_post,
            x_budgets=(spend.budget_per_day, spend.budget_per_month),
        )
    if chart is None:
        print_table(table.columns, table.rows, args.format or "table")
    else:
        print_chart(chart, table, since, until, args.format, limit)
    return 0


def print_chart(
    chart: Chart,
    table: Table,
    since: datetime | None,
    until: datetime | None,
    form: str | None,
    limit: int | None,
) -> None:
    """A report by day with every day of its range: bars when stdout is a terminal (or --format bars), else
    the rows, zeros included, in the format asked for."""
    import shutil

    from bot.charts import DayCounts, draw_bars

    days = DayCounts.from_rows(table.columns, table.rows, since, until)
    if form == "bars" or (form is None and sys.stdout.isatty()):
        if limit is not None:
            days = replace(days, days=days.days[:limit])  # a bar per day: --limit counts them as rows
        span = f"{days.days[0]} to {days.days[-1]}" if days.days else "no days"
        title = f"{chart.title}, {span}"
        print("\n".join(draw_bars(title, days, shutil.get_terminal_size().columns)))
        return
    print_table(table.columns, days.rows()[:limit], form or "table")


def command_search(args: argparse.Namespace) -> int:
    since = parse_moment("--since", args.since)
    with Store.open(load_settings(args.config).database, create=False, readonly=True) as store:
        table = store.search(args.query, since, args.limit or 50)
    print_table(table.columns, table.rows, args.format)
    return 0


def command_prune(args: argparse.Namespace) -> int:
    try:
        older_than = timedelta(seconds=parse_duration(args.older_than))
    except ValueError as error:
        raise UsageError(f"--older-than: {error}") from None
    if not older_than:
        raise UsageError("--older-than: expected a duration above zero (0 would prune every post not hit)")
    with Store.open(load_settings(args.config).database, create=False) as store:
        removed = store.prune(older_than, vacuum=args.vacuum)
    print(
        f"removed {removed['posts']} post(s) without a hit and {removed['runs']} poll record(s) older than "
        f"{args.older_than}" + ("; vacuumed" if args.vacuum else "")
    )
    return 0


def print_table(columns: list[str], rows: list[tuple], form: str) -> None:
    """Rows as a table for a terminal (columns aligned by their width on screen), or CSV or JSON for pipes.

    Table and CSV cells lose control characters (a post cannot drive the terminal); JSON keeps every
    character, escaped."""
    if form == "json":
        document = [dict(zip(columns, row, strict=True)) for row in rows]
        print(json_escaped(json.dumps(document, ensure_ascii=False, indent=1)))
        return
    if form == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_csv_cell(value) for value in row] for row in rows)
        return
    from tabulate import tabulate  # only tables need it: other commands start without it

    cells = [[_cell(value) for value in row] for row in rows]
    # A column is numeric when SQLite gave numbers, never because some text looks like one.
    text_columns = [i for i in range(len(columns)) if not all(_is_number(row[i]) for row in rows)]
    print(
        tabulate(cells, headers=columns, tablefmt="simple", numalign="right", disable_numparse=text_columns)
    )
    if not rows:
        print("(no rows)")


def _cell(value: object, width: int = 60) -> object:
    """A table cell: numbers as they are (tabulate right-aligns them); text on one line, at most `width`
    columns on screen; a list as its items."""
    from wcwidth import wcswidth, wcwidth

    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, list):
        value = ", ".join(str(item) for item in value)
    text = " ".join(printable(str(value)).split())
    if wcswidth(text) <= width:
        return text
    clipped, used = [], 1  # the ellipsis takes one column
    for char in text:
        used += max(wcwidth(char), 0)
        if used > width:
            break
        clipped.append(char)
    return "".join(clipped) + "…"


def _is_number(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _csv_cell(value: object) -> object:
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return printable(value) if isinstance(value, str) else value


def command_health(args: argparse.Namespace) -> int:
    from bot.health import check_heartbeat, heartbeat_path

    settings = load_settings(args.config)
    healthy, message = check_heartbeat(heartbeat_path(settings.database))
    print(message)
    return 0 if healthy else 1


def command_alerts(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    with Store.open(settings.database, create=False, readonly=args.action == "status") as store:
        if args.action == "retry-dead":
            if args.channel is not None:
                _check_channel(args.channel, settings, store)
            count = store.retry_dead(args.channel)
            print(f"requeued {count} dead alert(s)" + (f" of channel {args.channel}" if args.channel else ""))
            return 0
        if args.action == "resume":
            if args.channel is not None:
                _check_channel(args.channel, settings, store)
            return _resume(store, args.channel)
        rows = store.outbox_summary()
        paused = store.paused_channels()
    print(f"{'channel':<16} {'status':<8} {'alerts':>7}  last error")
    for channel, status, count, error in rows:
        if status == "pending" and channel in paused:
            error = paused[channel]
        elif status != "dead":
            error = ""
        shown = printable(error) if error else ""  # a receiver's words, not commands
        print(f"{channel:<16} {status:<8} {count:>7}  {shown}")
    return 0


def _resume(store: Store, channel: str | None) -> int:
    """Make a paused channel's alerts (every paused channel's, without --channel) due now."""
    paused = store.paused_channels()
    if channel is not None and channel not in paused:
        print(f"channel {channel} is not paused")
        return 0
    for name in [channel] if channel else list(paused):
        print(f"resumed channel {name}: {store.resume_channel(name)} alert(s) due now")
    return 0


def _check_channel(name: str, settings: Settings, store: Store) -> None:
    """UsageError unless `name` is a configured channel or one the outbox holds alerts for."""
    known = {channel.name for channel in settings.channels} | {row[0] for row in store.outbox_summary()}
    if name not in known:
        raise UsageError(f"--channel {name!r}: no such channel; channels: {', '.join(sorted(known))}")


def _check_rule(rule_id: str, settings: Settings) -> None:
    """UsageError unless `rule_id` is a rule of the settings' rules directory (or the model's, or a watch's
    name: a watch's alerts carry it as their rule)."""
    from difflib import get_close_matches

    from bot.detect.matcher import load_rules
    from bot.models import MODEL_RULE

    known = [rule.id for rule in load_rules(settings.rules)] + [MODEL_RULE]
    known += [watch.name for watch in settings.watches]
    if rule_id not in known:
        close = get_close_matches(rule_id, known, n=1)
        raise UsageError(
            f"--rule {rule_id!r}: no such rule in {settings.rules} nor watch in {settings.path}"
            + (f"; did you mean {close[0]}?" if close else "")
        )


def _account(option: str, value: str) -> str:
    """How an account is shown back: "@elonmusk", or "x:elonmusk" when a platform is named."""
    try:
        platform, handle = parse_account(value)
    except ValueError as error:
        raise UsageError(f"{option} {error}") from None
    return f"{platform}:{handle}" if platform else f"@{handle}"


def command_mute(args: argparse.Namespace) -> int:
    try:
        seconds = parse_duration(args.duration)
    except ValueError as error:
        raise UsageError(f"--for: {error}") from None
    if seconds <= 0:
        raise UsageError(f"--for: expected a duration above zero, got {args.duration!r}")
    until = utcnow() + timedelta(seconds=seconds)
    settings = load_settings(args.config)
    if args.list:
        with Store.open(settings.database) as store:
            for kind, name, moment in store.mutes():
                print(f"{kind} {printable(name)} muted until {moment:%Y-%m-%d %H:%M} UTC")
        return 0
    rule, author = _mute_target(args)
    if rule is not None:
        _check_rule(rule, settings)
    with Store.open(settings.database) as store:
        store.mute(until, rule_id=rule, author=author)
    what = f"rule {rule}" if rule else f"author {_account('--author', author)}"
    print(f"{what} muted until {until:%Y-%m-%d %H:%M} UTC: hits are stored, not sent")
    return 0


def command_unmute(args: argparse.Namespace) -> int:
    rule, author = _mute_target(args)
    with Store.open(load_settings(args.config).database) as store:
        ended = store.unmute(rule_id=rule, author=author)
    what = f"rule {rule}" if rule else f"author {_account('--author', author)}"
    print(f"{what}: {ended} mute(s) ended" if ended else f"{what} was not muted")
    return 0


def _mute_target(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The (rule id, account) that --rule or --author names, stripped; UsageError when it is empty or the
    account is not in a form rules take."""
    if args.rule is not None:
        if not args.rule.strip():
            raise UsageError("--rule: expected a rule id, got an empty one")
        return args.rule.strip(), None
    _account("--author", args.author)
    return None, args.author.strip()


def _settings_if_any(config: Path | None) -> Settings | None:
    """The settings, or None when none were named and the default ones cannot be read (a backtest of rules
    alone needs no settings)."""
    try:
        return load_settings(config)
    except ConfigError:
        if config is not None:
            raise
        return None
