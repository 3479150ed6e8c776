"""X spend under control: the ledger of posts X bills (each once per UTC day), the budgets that pause X feeds,
and where the operator sees the spend (source-health, x-spend, /metrics). X answers through tweepy's real
client with `responses`; the database is a real SQLite file; the clock of the pipeline is set by each test."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import responses
import sqlite_utils
from prometheus_client import generate_latest

from bot import metrics
from bot.detect.detector import Detector
from bot.models import Fetch
from bot.notifiers.console import ConsoleNotifier
from bot.pipeline import Pipeline
from bot.sources.replay import ReplaySource
from bot.timeutil import utcnow
from config import ConfigError, load_settings
from config.settings import XSpend
from storage import Store
from storage.schema import MIGRATIONS, SCHEMA_VERSION, _x_spend_ledger, migrate
from tests.conftest import ROOT, post_record, replay_config
from tests.test_store import fill_a_schema_6_database
from tests.test_x_source import make_source, query_of
from tests.xapi import API, USERS, timeline, tweet

TIMELINE = f"{API}/users/{USERS['elonmusk']}/tweets"
FINKD_TIMELINE = f"{API}/users/{USERS['finkd']}/tweets"
DAY = datetime(2026, 3, 31, 10, 0, tzinfo=UTC)  # the last day of a month: the next day is another month


class Clock:
    """The pipeline's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def x_pipeline(
    store: Store, detector: Detector, clock: Clock, spend: XSpend, *channels, replay: Path | None = None
) -> Pipeline:
    """X source "x" polling elonmusk and finkd (known ids), and the replay file if given."""
    sources = {"x": make_source(accounts=["elonmusk", "finkd"], known_ids=dict(USERS))}
    if replay is not None:
        sources["demo"] = ReplaySource("demo", replay)
    return Pipeline(store, detector, sources, list(channels), x_spend=spend, clock=clock)


def billed_per_day(store: Store) -> dict[str, int]:
    rows = store.db.execute("SELECT day, sum(posts) FROM x_read_totals GROUP BY day").fetchall()
    return dict(rows)


def console() -> tuple[ConsoleNotifier, io.StringIO]:
    stream = io.StringIO()
    return ConsoleNotifier("console", stream=stream, color=False), stream


# -- the ledger ---------------------------------------------------------------------------------------------


@responses.activate
def test_a_post_x_returns_twice_on_one_utc_day_is_billed_once(store, detector):
    responses.get(TIMELINE, json=timeline(tweet("202", "b"), tweet("201", "a")))
    responses.get(TIMELINE, json=timeline(tweet("203", "c"), tweet("202", "b")))
    clock = Clock(DAY)
    pipeline = x_pipeline(store, detector, clock, XSpend())
    first = pipeline.poll("x", "elonmusk")
    clock.now += timedelta(hours=13, minutes=59)  # 23:59, the same UTC day
    second = pipeline.poll("x", "elonmusk")
    assert (first.fetched, first.billed, second.fetched, second.billed) == (2, 2, 2, 1)
    assert billed_per_day(store) == {"2026-03-31": 3}


@responses.activate
def test_the_same_post_returned_on_the_next_utc_day_is_billed_again(store, detector):
    responses.get(TIMELINE, json=timeline(tweet("202", "b"), tweet("201", "a")))
    responses.get(TIMELINE, json=timeline(tweet("202", "b")))
    clock = Clock(DAY.replace(hour=23, minute=59))
    pipeline = x_pipeline(store, detector, clock, XSpend())
    pipeline.poll("x", "elonmusk")
    clock.now += timedelta(minutes=2)  # 00:01 UTC on April 1st
    assert pipeline.poll("x", "elonmusk").billed == 1
    assert billed_per_day(store) == {"2026-03-31": 2, "2026-04-01": 1}


@responses.activate
def test_a_post_two_feeds_return_on_one_day_is_billed_to_the_first_only(store, detector):
    responses.get(TIMELINE, json=timeline(tweet("201", "a"), users=("elonmusk", "finkd")))
    responses.get(FINKD_TIMELINE, json=timeline(tweet("201", "a"), tweet("301", "z", author="finkd")))
    pipeline = x_pipeline(store, detector, Clock(DAY), XSpend())
    pipeline.poll("x", "elonmusk")
    pipeline.poll("x", "finkd")
    rows = store.db.execute("SELECT feed, posts FROM x_read_totals ORDER BY feed").fetchall()
    assert rows == [("elonmusk", 1), ("finkd", 1)]


@responses.activate
def test_every_post_object_x_returned_is_counted_but_not_the_originals_it_includes():
    original = tweet("100", "In 1986, Larry Bird", author="finkd")
    repost = tweet("201", "RT @finkd: In 1986", referenced_tweets=[{"type": "retweeted", "id": "100"}])
    broken = tweet("202", "no date", created_at="not a date")
    responses.get(TIMELINE, json=timeline(repost, broken, users=("elonmusk", "finkd"), included=(original,)))
    fetch = make_source().fetch("elonmusk", None)
    assert len(fetch.rejected) == 1  # X billed it all the same
    assert sorted(fetch.read_ids) == ["201", "202"]


def test_reads_enter_the_ledger_with_the_poll_or_not_at_all(store):
    fetch = Fetch((), "202", 2, read_ids=("201", "202"))

    def crash(*_):  # the process dies after the posts are written, before the poll commits
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.save_poll("x", "elonmusk", DAY, fetch, [], [], platform="x", link=crash)
    assert billed_per_day(store) == {}
    assert store.save_poll("x", "elonmusk", DAY, fetch, [], [], platform="x").billed == 2
    assert store.save_poll("x", "elonmusk", DAY, fetch, [], [], platform="x").billed == 0
    assert billed_per_day(store) == {"2026-03-31": 2}


def test_the_ids_of_ended_days_are_dropped_and_their_totals_kept(store):
    for day in range(1, 5):
        store.save_poll("x", "f", DAY.replace(day=day), Fetch((), "9", 3, read_ids=("7", "8", "9")), [], [])
    assert store.db.execute("SELECT DISTINCT day FROM x_reads ORDER BY day").fetchall() == [
        ("2026-03-03",),  # yesterday's stay: a poll begun before midnight may still be saving
        ("2026-03-04",),
    ]
    assert billed_per_day(store) == {f"2026-03-0{day}": 3 for day in range(1, 5)}


# -- budgets ------------------------------------------------------------------------------------------------


@responses.activate
def test_a_spent_daily_budget_pauses_x_without_asking_x_while_the_replay_goes_on(store, detector, write_feed):
    feed = write_feed([post_record("1", "I'm up for a cage match if he is lol")])
    responses.get(TIMELINE, json=timeline(tweet("202", "b"), tweet("201", "a")))
    channel, printed = console()
    clock = Clock(DAY)
    pipeline = x_pipeline(store, detector, clock, XSpend(budget_per_day=0.01), channel, replay=feed)
    assert pipeline.poll("x", "elonmusk").billed == 2  # 2 posts at $0.005: the day's $0.01 is spent
    clock.now += timedelta(minutes=5)
    assert pipeline.poll("x", "finkd") is None
    assert pipeline.poll("x", "elonmusk") is None
    assert len(responses.calls) == 1  # X was not asked again
    assert pipeline.poll("demo", feed.name).new_posts == 1
    for feed_name in ("elonmusk", "finkd"):
        assert store.feed_state("x", feed_name).paused_until == datetime(2026, 4, 1, tzinfo=UTC)
    (error,) = store.db.execute("SELECT error FROM runs WHERE error IS NOT NULL").fetchall()
    assert error[0].startswith("X budget reached: $0.01 of $0.01 per day spent (2 posts at $0.005 a post)")
    pipeline.deliver_all()
    assert printed.getvalue().count("X BUDGET REACHED") == 1
    assert "X feeds paused until 2026-04-01 00:00 UTC, other platforms go on" in printed.getvalue()


@responses.activate
def test_a_poll_asks_x_only_for_what_the_budget_leaves_and_the_rest_follows_when_it_allows(store, detector):
    pages = [[str(500 - 10 * page - n) for n in range(10)] for page in range(3)]
    for number, ids in enumerate(pages):
        token = f"p{number + 2}" if number < len(pages) - 1 else None
        responses.get(TIMELINE, json=timeline(*[tweet(i, f"post {i}") for i in ids], next_token=token))
    clock = Clock(DAY)
    pipeline = x_pipeline(store, detector, clock, XSpend(budget_per_day=0.05))  # 10 posts a day
    store.save_poll("x", "elonmusk", DAY, Fetch(posts=(), cursor="400"), [], [])
    assert pipeline.poll_until_caught_up("x", "elonmusk") is None  # 10 read, then the budget stopped it
    assert len(responses.calls) == 1 and query_of(responses.calls[0])["max_results"] == ["10"]
    assert store.counts()["posts"] == 10
    clock.now = DAY + timedelta(days=1, minutes=1)
    pipeline.x_spend = XSpend(budget_per_day=1.0)
    saved = pipeline.poll_until_caught_up("x", "elonmusk")
    assert saved is not None and not saved.more
    assert store.counts()["posts"] == 30  # the next day the saved page took up where the budget stopped
    assert query_of(responses.calls[1])["pagination_token"] == ["p2"]
    assert store.feed_state("x", "elonmusk").cursor == "500"


@responses.activate
def test_two_x_sources_that_find_the_budget_spent_send_one_notice(store, detector):
    responses.get(TIMELINE, json=timeline(tweet("202", "b"), tweet("201", "a")))
    channel, printed = console()
    clock = Clock(DAY)
    pipeline = x_pipeline(store, detector, clock, XSpend(budget_per_day=0.01), channel)
    pipeline.sources["other"] = make_source(accounts=["finkd"], known_ids=dict(USERS))
    pipeline.poll("x", "elonmusk")
    assert pipeline.poll("x", "finkd") is None
    assert pipeline.poll("other", "finkd") is None
    assert len(responses.calls) == 1
    pipeline.deliver_all()
    assert printed.getvalue().count("X BUDGET REACHED") == 1


@responses.activate
def test_x_feeds_polled_at_the_same_time_share_what_the_budget_leaves_rather_than_each_take_it_all(
    store, detector
):
    asked, release = threading.Event(), threading.Event()

    def slow_answer(request):
        asked.set()
        release.wait(5)
        page = timeline(*[tweet(str(500 - n), f"post {n}") for n in range(10)])
        return 200, {}, json.dumps(page)

    responses.add_callback(responses.GET, TIMELINE, callback=slow_answer)
    responses.get(FINKD_TIMELINE, json=timeline(*[tweet(str(600 - n), f"post {n}") for n in range(10)]))
    pipeline = x_pipeline(store, detector, Clock(DAY), XSpend(budget_per_day=0.05))  # 10 posts a day
    for feed in ("elonmusk", "finkd"):
        store.save_poll("x", feed, DAY, Fetch(posts=(), cursor="400"), [], [])
    first = threading.Thread(target=pipeline.poll, args=("x", "elonmusk"))
    first.start()
    try:
        assert asked.wait(5)  # the first poll asked X for the 10 posts the budget leaves, and waits
        assert pipeline.poll("x", "finkd") is None  # what is left is the first poll's: X is not asked
    finally:
        release.set()
        first.join(5)
    assert [call.request.url.split("?")[0] for call in responses.calls] == [TIMELINE]
    assert billed_per_day(store) == {"2026-03-31": 10}
    assert (
        store.feed_state("x", "finkd").cursor == "400" and store.feed_state("x", "finkd").paused_until is None
    )


@responses.activate
def test_a_daily_pause_ends_at_the_next_utc_day(store, detector):
    responses.get(TIMELINE, json=timeline(tweet("202", "b"), tweet("201", "a")))
    responses.get(TIMELINE, json=timeline(tweet("203", "c")))
    clock = Clock(DAY)
    pipeline = x_pipeline(store, detector, clock, XSpend(budget_per_day=0.01))
    pipeline.poll("x", "elonmusk")
    clock.now = DAY.replace(hour=23, minute=59)
    assert pipeline.poll("x", "elonmusk") is None
    clock.now = datetime(2026, 4, 1, 0, 1, tzinfo=UTC)
    assert pipeline.poll("x", "elonmusk").billed == 1
    assert len(responses.calls) == 2


@responses.activate
def test_a_spent_monthly_budget_pauses_x_until_the_next_month_with_a_notice_of_its_own(store, detector):
    responses.get(TIMELINE, json=timeline(tweet("202", "b"), tweet("201", "a")))
    responses.get(TIMELINE, json=timeline(tweet("204", "d"), tweet("203", "c")))
    channel, printed = console()
    clock = Clock(datetime(2026, 3, 30, 10, 0, tzinfo=UTC))
    pipeline = x_pipeline(store, detector, clock, XSpend(budget_per_day=0.01, budget_per_month=0.02), channel)
    pipeline.poll("x", "elonmusk")
    assert pipeline.poll("x", "elonmusk") is None  # the day's budget: paused until March 31
    clock.now = DAY
    pipeline.poll("x", "elonmusk")
    clock.now = DAY + timedelta(minutes=5)
    assert pipeline.poll("x", "elonmusk") is None  # both spent: the month's pause is the longer
    assert store.feed_state("x", "elonmusk").paused_until == datetime(2026, 4, 1, tzinfo=UTC)
    pipeline.deliver_all()
    assert printed.getvalue().count("X BUDGET REACHED") == 2  # March 30's day, then March's month
    assert "$0.02 of $0.02 per month spent (4 posts" in printed.getvalue()


@responses.activate
def test_a_budget_raised_during_its_pause_lets_x_poll_again_at_once(store, detector):
    responses.get(TIMELINE, json=timeline(tweet("202", "b"), tweet("201", "a")))
    responses.get(TIMELINE, json=timeline(tweet("203", "c")))
    clock = Clock(DAY)
    pipeline = x_pipeline(store, detector, clock, XSpend(budget_per_day=0.01))
    pipeline.poll("x", "elonmusk")
    assert pipeline.poll("x", "elonmusk") is None
    assert pipeline.poll("x", "elonmusk") is None  # still paused: the budget is what it was
    pipeline.x_spend = XSpend(budget_per_day=1.0)  # the operator raised it and restarted
    assert pipeline.poll("x", "elonmusk").billed == 1
    assert len(responses.calls) == 2


@responses.activate
def test_an_x_source_without_a_budget_is_never_paused(store, detector):
    responses.get(TIMELINE, json=timeline(tweet("202", "b"), tweet("201", "a")))
    responses.get(TIMELINE, json=timeline(tweet("203", "c")))
    pipeline = x_pipeline(store, detector, Clock(DAY), XSpend())
    pipeline.poll("x", "elonmusk")
    assert pipeline.poll("x", "elonmusk").billed == 1


# -- settings -----------------------------------------------------------------------------------------------


def readme_x_table() -> str:
    """The [x] example of README's section on X costs, as a user would copy it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### X costs and budgets") :]
    start = section.index("```toml\n") + len("```toml\n")
    return textwrap.dedent(section[start : section.index("```", start)].rstrip(" "))


def test_the_readme_example_sets_the_price_and_both_budgets(tmp_path, write_config, write_feed):
    config = write_config(replay_config(write_feed([]), tmp_path / "r.db") + readme_x_table())
    assert load_settings(config, environ={}).x_spend == XSpend(0.005, 2.0, 40.0)


def test_without_an_x_table_the_price_is_half_a_cent_and_there_is_no_budget(
    tmp_path, write_config, write_feed
):
    config = write_config(replay_config(write_feed([]), tmp_path / "r.db"))
    assert load_settings(config, environ={}).x_spend == XSpend(0.005, None, None)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("price_per_post = 0", "x.price_per_post: expected an amount of US dollars above zero"),
        ('budget_per_day = "ten"', "x.budget_per_day: expected an amount of US dollars above zero"),
        ("budget_per_month = -5", "x.budget_per_month: expected an amount of US dollars above zero"),
        ("budget_per_week = 5", "x.budget_per_week: unknown key; expected one of: budget_per_day"),
    ],
)
def test_a_wrong_x_setting_is_named_in_one_line(tmp_path, write_config, write_feed, line, error):
    config = write_config(replay_config(write_feed([]), tmp_path / "r.db") + f"\n[x]\n{line}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config, environ={})
    assert str(raised.value).startswith(f"{config}: {error}")
    assert "\n" not in str(raised.value)


# -- the schema ---------------------------------------------------------------------------------------------


def test_a_database_from_before_the_ledger_keeps_every_row_and_gains_an_empty_ledger(tmp_path):
    path = tmp_path / "before.db"
    db = sqlite_utils.Database(path)
    migrate(db, MIGRATIONS[: MIGRATIONS.index(_x_spend_ledger)])
    fill_a_schema_6_database(db)
    tables = [t for t in db.table_names() if not t.startswith("posts_fts")]
    before = {table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() for table in tables}
    db.close()
    store = Store.open(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    for table, rows in before.items():
        assert store.db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() == rows, table
    assert store.report("source-health").rows[0][:2] == ("x", "elonmusk")
    assert store.save_poll("x", "elonmusk", DAY, Fetch((), "5", 1, read_ids=("5",)), [], []).billed == 1
    store.close()


# -- where the operator sees it -----------------------------------------------------------------------------


def run_report(config: Path, *args: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "run_bot.py", "--config", str(config), "report", *args, "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(config.parent)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def spend_database(tmp_path: Path, write_config, write_feed) -> Path:
    """A database where X feed elonmusk was billed 300 posts today, 100 yesterday and 50 forty days ago;
    settings that price them and set both budgets."""
    database = tmp_path / "ringside.db"
    now = utcnow()
    with Store.open(database) as store:
        for moment, count in ((now - timedelta(days=40), 50), (now - timedelta(days=1), 100), (now, 300)):
            ids = tuple(f"{moment:%m%d}{n}" for n in range(count))
            store.save_poll(
                "x", "elonmusk", moment, Fetch((), None, count, read_ids=ids), [], [], platform="x"
            )
    extra = "\n[x]\nprice_per_post = 0.004\nbudget_per_day = 2.0\nbudget_per_month = 40\n"
    return write_config(replay_config(write_feed([]), database) + extra)


def test_source_health_shows_an_x_feeds_posts_and_spend_today_this_month_and_the_budgets(
    tmp_path, write_config, write_feed
):
    config = spend_database(tmp_path, write_config, write_feed)
    (row,) = run_report(config, "source-health")
    month = 400 if utcnow().day > 1 else 300  # on the 1st, yesterday was last month
    assert (row["x_billed_today"], row["x_spend_today_usd"]) == (300, 1.2)
    assert row["x_spend_month_usd"] == pytest.approx(month * 0.004)
    assert (row["x_budget_day_usd"], row["x_budget_month_usd"]) == (2.0, 40.0)


def test_the_x_spend_report_lists_each_day_and_feed_in_dollars(tmp_path, write_config, write_feed):
    config = spend_database(tmp_path, write_config, write_feed)
    rows = run_report(config, "x-spend")
    now = utcnow()
    days = [f"{now - timedelta(days=ago):%Y-%m-%d}" for ago in (0, 1, 40)]
    assert [(r["day"], r["feed"], r["posts"], r["usd"]) for r in rows] == [
        (days[0], "elonmusk", 300, 1.2),
        (days[1], "elonmusk", 100, 0.4),
        (days[2], "elonmusk", 50, 0.2),
    ]
    assert [r["posts"] for r in run_report(config, "x-spend", "--since", "7d")] == [300, 100]


@responses.activate
def test_metrics_show_the_spend_of_the_day_and_month_and_the_budgets(store, detector):
    responses.get(TIMELINE, json=timeline(tweet("202", "b"), tweet("201", "a"), tweet("200", "z")))
    pipeline = x_pipeline(
        store, detector, Clock(DAY), XSpend(price_per_post=0.01, budget_per_day=5, budget_per_month=90)
    )
    before = metrics.REGISTRY.get_sample_value("ringside_x_posts_billed_total", {"source": "x"}) or 0
    pipeline.poll("x", "elonmusk")
    scraped = generate_latest(metrics.REGISTRY).decode()
    assert 'ringside_x_spend_dollars{period="day"} 0.03' in scraped
    assert 'ringside_x_spend_dollars{period="month"} 0.03' in scraped
    assert 'ringside_x_budget_dollars{period="day"} 5.0' in scraped
    assert 'ringside_x_budget_dollars{period="month"} 90.0' in scraped
    assert f'ringside_x_posts_billed_total{{source="x"}} {before + 3}' in scraped
