"""Frequency, spike and silence watches: posts stored by the real pipeline from replay files with controlled
timestamps, evaluated at a chosen moment, alerts through the outbox to real channels."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
import sqlite_utils

import run_bot
from bot.app import build_pipeline
from bot.notifiers.apprise import apprise_message
from bot.notifiers.console import ConsoleNotifier
from bot.notifiers.slack import slack_message
from bot.pipeline import Pipeline
from bot.sources.replay import ReplaySource
from bot.timeutil import iso, utcnow
from config import ConfigError, load_settings
from config.settings import Exchanges, Person
from config.watches import Watch
from storage import Store
from storage.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from tests.conftest import ROOT, replay_config
from tests.receiver import Receiver
from tests.test_channels import SCHEMA, webhook
from tests.test_exchanges import Collecting

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PEOPLE = Exchanges(
    people=(
        Person("musk", "Elon Musk", frozenset({"x:elonmusk", "threads:elonmusk"})),
        Person("zuck", "Mark Zuckerberg", frozenset({"instagram:zuck", "threads:zuck", "x:finkd"})),
    ),
)
FREQUENCY = Watch("musk-zuck", "frequency", severity=4, people=("musk", "zuck"), count=3, hours=48)
SPIKE = Watch("challenge-surge", "spike", category="challenge", hours=6, ratio=3, baseline_days=7, min_hits=4)
SILENCE = Watch("musk-quiet", "silence", severity=2, people=("musk",), days=3)
CHALLENGE_TEXT = "I'm up for a cage match if he is lol"


def ago(hours: float) -> str:
    return iso(NOW - timedelta(hours=hours))


def post(id: str, author: str, text: str, hours_ago: float, platform: str = "x", **extra) -> dict:
    return {
        "platform": platform,
        "id": id,
        "author": author,
        "text": text,
        "created_at": ago(hours_ago),
    } | extra


class Watching:
    """A pipeline over replay files, with the watches under test and a channel that keeps what it gets."""

    def __init__(self, store: Store, detector, write_feed, *watches: Watch, channels=()) -> None:
        self.store, self.detector, self.write_feed = store, detector, write_feed
        self.channel = Collecting()
        self.watches = watches
        self.channels = [self.channel, *channels]
        self.feeds = 0

    def store_posts(self, records: list[dict], feed_name: str | None = None) -> None:
        self.feeds += 1
        feed = self.write_feed(records, name=feed_name or f"feed{self.feeds}.jsonl")
        pipeline = self.pipeline({"replay": ReplaySource("replay", feed)})
        assert pipeline.poll("replay", feed.name) is not None

    def pipeline(self, sources: dict | None = None) -> Pipeline:
        """The pipeline of the settings: the source "replay" configured (it polls the feeds written)."""
        sources = sources or {"replay": ReplaySource("replay", self.write_feed([], name="none.jsonl"))}
        return Pipeline(
            self.store, self.detector, sources, self.channels, exchanges=PEOPLE, watches=self.watches
        )

    def evaluate(self, at: datetime = NOW) -> list[dict]:
        """Evaluate the watches at `at`, deliver, and return the watch alerts delivered now."""
        pipeline = self.pipeline()
        pipeline.evaluate_watches(at)
        before = len(self.channel.payloads)
        pipeline.deliver_all()
        return [p for p in self.channel.payloads[before:] if p.get("kind") == "watch"]


@pytest.fixture
def watching(store, detector, write_feed):
    def make(*watches: Watch, channels=()) -> Watching:
        return Watching(store, detector, write_feed, *watches, channels=channels)

    return make


def taunts(count: int, first_hours_ago: float = 20, ids: str = "") -> list[dict]:
    """`count` posts of Musk and Zuckerberg addressing each other an hour apart, in turn: Musk mentions
    @finkd on X, Zuckerberg replies to that post on X, then mentions @elonmusk on Threads (a handle is the
    platform's own: Musk's Threads account is one of his [[people]] accounts)."""
    records = []
    for n in range(count):
        at, id = first_hours_ago - n, f"{ids}{n}"
        if n % 3 == 0:
            records.append(post(id, "elonmusk", f"@finkd round {n}", at, mentions=["finkd"]))
        elif n % 3 == 1:
            records.append(post(id, "finkd", f"sure {n}", at, kind="reply", reply_to=f"{ids}{n - 1}"))
        else:
            threads = {"platform": "threads", "mentions": ["elonmusk"]}
            records.append(post(id, "zuck", f"@elonmusk again {n}", at, **threads))
    return records


# -- frequency ---------------------------------------------------------------------------------------


def test_two_people_addressing_each_other_three_times_within_48h_fire_the_frequency_watch_once(watching):
    w = watching(FREQUENCY)
    w.store_posts(taunts(3))
    (alert,) = w.evaluate()
    assert alert["rule"] == {"id": "musk-zuck", "category": "frequency", "severity": 4}
    assert alert["people"] == ["musk", "zuck"] and alert["names"] == ["Elon Musk", "Mark Zuckerberg"]
    assert alert["measured"]["count"] == 3 and alert["platforms"] == ["threads", "x"]
    assert [p["id"] for p in alert["posts"]] == ["0", "1", "2"]
    assert alert["key"].startswith("rs1f-")
    assert w.evaluate(NOW + timedelta(minutes=1)) == []  # still firing: no second alert
    assert w.evaluate(NOW + timedelta(minutes=2)) == []


def test_two_mentions_within_48h_do_not_fire_a_watch_that_needs_three(watching):
    w = watching(FREQUENCY)
    w.store_posts(taunts(2))
    assert w.evaluate() == []


def test_mentions_of_someone_else_or_older_than_the_window_do_not_count(watching):
    w = watching(FREQUENCY)
    w.store_posts(
        [
            post("1", "elonmusk", "@finkd old", 50, mentions=["finkd"]),
            post("2", "elonmusk", "@jeffbezos hi", 2, mentions=["jeffbezos"]),
            post("3", "elonmusk", "@finkd now", 1, mentions=["finkd"]),
            post("4", "zuck", "@elonmusk", 1, platform="instagram", mentions=["elonmusk"]),
        ]
    )
    assert w.evaluate() == []


def test_the_frequency_watch_fires_again_after_it_cleared_with_a_new_key(watching):
    w = watching(FREQUENCY)
    w.store_posts(taunts(3))
    (first,) = w.evaluate()
    assert w.evaluate(NOW + timedelta(hours=40)) == []  # the oldest taunts left the window: cleared
    assert w.store.watch_state("musk-zuck").firing_since is None
    w.store_posts(taunts(3, first_hours_ago=-41, ids="b"))  # three more, 41 to 43 hours after NOW
    (second,) = w.evaluate(NOW + timedelta(hours=44))
    assert second["key"] != first["key"] and second["watch"]["alert"] == 1


def test_a_throttle_sends_a_reminder_while_firing_and_holds_back_a_quick_refire(watching):
    w = watching(Watch("musk-zuck", "frequency", people=("musk", "zuck"), count=3, hours=48, throttle=3600))
    w.store_posts(taunts(3))
    (first,) = w.evaluate()
    assert w.evaluate(NOW + timedelta(minutes=59)) == []
    (reminder,) = w.evaluate(NOW + timedelta(minutes=61))
    assert (
        reminder["watch"]["alert"] == 2
        and reminder["watch"]["firing_since"] == first["watch"]["firing_since"]
    )
    assert reminder["key"] != first["key"]


def test_a_muted_watch_keeps_its_reminders_in_the_outbox_as_muted_and_sends_none(watching):
    w = watching(Watch("musk-zuck", "frequency", people=("musk", "zuck"), count=3, hours=48, throttle=3600))
    w.store_posts(taunts(3))
    assert len(w.evaluate()) == 1
    w.store.mute(NOW + timedelta(hours=24), rule_id="musk-zuck")  # as the Slack app's button does
    assert w.evaluate(NOW + timedelta(minutes=61)) == []
    statuses = w.store.db.execute("SELECT status FROM alerts WHERE rule_id = 'musk-zuck' ORDER BY id")
    assert [status for (status,) in statuses] == ["sent", "muted"]


def test_mute_and_unmute_take_a_watch_s_name_as_its_rule(tmp_path, write_config, write_feed, capsys):
    config = write_config(replay_config(write_feed([]), tmp_path / "r.db", WATCHES))
    assert run_bot.main(["--config", str(config), "once"]) == 0
    assert run_bot.main(["--config", str(config), "mute", "--rule", "musk-quiet", "--for", "2h"]) == 0
    assert run_bot.main(["--config", str(config), "unmute", "--rule", "musk-quiet"]) == 0
    assert run_bot.main(["--config", str(config), "mute", "--rule", "musk-quite"]) == 2
    assert "did you mean musk-quiet?" in capsys.readouterr().err


def test_a_restart_while_the_watch_still_fires_does_not_repeat_its_alert(watching):
    w = watching(FREQUENCY)
    w.store_posts(taunts(3))
    w.pipeline().evaluate_watches(NOW)  # queued, not yet delivered
    path = w.store.db.execute("PRAGMA database_list").fetchone()[2]
    with Store.open(path) as reopened:
        restarted = Pipeline(reopened, w.detector, {}, w.channels, exchanges=PEOPLE, watches=[FREQUENCY])
        assert restarted.evaluate_watches(NOW + timedelta(minutes=5)) == 0
        keys = reopened.db.execute("SELECT key FROM alerts WHERE key LIKE 'rs1f-%'").fetchall()
    assert len(keys) == 1


def test_a_watch_that_fails_is_logged_and_the_others_still_alert(watching, caplog):
    broken = Watch("ghost", "frequency", people=("musk", "nobody"), count=1, hours=1)  # not in PEOPLE
    w = watching(broken, FREQUENCY)
    w.store_posts(taunts(3))
    (alert,) = w.evaluate()
    assert alert["rule"]["id"] == "musk-zuck"
    assert "watch ghost: evaluation failed" in caplog.text


# -- spike -------------------------------------------------------------------------------------------


def challenges(hours_ago: list[float], start: int = 0) -> list[dict]:
    return [post(f"{start + n}", f"fan{n}", CHALLENGE_TEXT, at) for n, at in enumerate(hours_ago)]


def baseline(posts: int = 7) -> list[dict]:
    """One challenge a day over the week before the window, and an old quiet post that starts the history."""
    return [
        post("500", "someone", "hello", 8 * 24),
        *challenges([24 * d + 7 for d in range(posts)], start=600),
    ]


def test_hits_of_a_category_far_above_their_usual_rate_fire_the_spike_watch_once(watching):
    w = watching(SPIKE)
    w.store_posts(baseline() + challenges([1, 2, 3, 4, 5]))
    (alert,) = w.evaluate()
    assert alert["rule"] == {"id": "challenge-surge", "category": "spike", "severity": 3}
    measured = alert["measured"]
    assert measured["hits"] == 5 and measured["ratio"] > 3
    assert measured["usual"] == pytest.approx(7 * 6 / (7 * 24 + 0), rel=0.05)
    assert len(alert["posts"]) == 5
    assert w.evaluate(NOW + timedelta(minutes=1)) == []


def test_a_spike_below_min_hits_does_not_fire_even_from_a_quiet_baseline(watching):
    w = watching(SPIKE)
    w.store_posts([post("500", "someone", "hello", 8 * 24), *challenges([1, 2, 3])])
    assert w.evaluate() == []


def test_a_category_at_its_usual_rate_is_no_spike(watching):
    w = watching(SPIKE)
    every_3h = [7 + 3 * n for n in range(56)]  # 2 per 6 hours all week: 5 now is 2.5 times that, not 3
    w.store_posts([post("500", "someone", "hello", 8 * 24), *challenges([1, 2, 3, 4, 5, *every_3h])])
    assert w.evaluate() == []
    w.store_posts(challenges([0.5], start=900))  # a sixth: 3 times the usual rate
    (alert,) = w.evaluate()
    assert (alert["measured"]["hits"], alert["measured"]["usual"]) == (6, 2.0)


def test_a_spike_needs_a_window_of_history_before_it(watching):
    w = watching(SPIKE)
    w.store_posts(challenges([1, 2, 3, 4, 5, 7]))  # nothing before 7 hours ago: no usual rate yet
    assert w.evaluate() == []


def test_a_spike_fires_again_after_it_cleared(watching):
    w = watching(SPIKE)
    w.store_posts(baseline() + challenges([1, 2, 3, 4, 5]))
    (first,) = w.evaluate()
    assert w.evaluate(NOW + timedelta(hours=7)) == []
    w.store_posts(challenges([-8, -8.5, -9, -9.5, -10], start=300))
    (second,) = w.evaluate(NOW + timedelta(hours=11))
    assert second["key"] != first["key"]


# -- silence -----------------------------------------------------------------------------------------


def test_a_person_quiet_for_three_days_on_a_healthy_feed_fires_the_silence_watch_once(watching):
    w = watching(SILENCE)
    w.store_posts([post("1", "elonmusk", "hello", 80), post("2", "someone", "hi", 1)])
    (alert,) = w.evaluate()
    assert alert["rule"] == {"id": "musk-quiet", "category": "silence", "severity": 2}
    assert alert["people"] == ["musk"] and alert["platforms"] == ["x"]
    assert alert["measured"]["days_quiet"] == pytest.approx(80 / 24, abs=0.01)
    assert "Elon Musk has not posted for 3.3 days" in alert["text"]
    assert w.evaluate(NOW + timedelta(hours=1)) == []


def test_a_person_who_posted_within_the_days_is_not_silent(watching):
    w = watching(SILENCE)
    w.store_posts([post("1", "elonmusk", "hello", 70)])
    assert w.evaluate() == []


def test_a_failing_feed_is_not_taken_for_silence(watching):
    w = watching(SILENCE)
    w.store_posts([post("1", "elonmusk", "hello", 80)])
    feed = f"feed{w.feeds}.jsonl"
    w.store.save_failed_poll("replay", feed, utcnow(), "HTTP 503 from the platform")
    assert w.evaluate() == []
    assert w.store.watch_state("musk-quiet").firing_since is None


def test_another_feed_of_the_source_failing_does_not_hide_a_silence_on_the_account_s_own_feed(watching):
    w = watching(SILENCE)
    w.store_posts([post("1", "elonmusk", "hello", 80)], feed_name="elonmusk")  # a feed named after him
    w.store_posts([post("2", "finkd", "hi", 1)], feed_name="finkd")
    w.store.save_failed_poll("replay", "finkd", utcnow(), "HTTP 503 from the platform")
    (alert,) = w.evaluate()
    assert alert["rule"]["id"] == "musk-quiet"
    w.store.save_failed_poll("replay", "elonmusk", utcnow(), "HTTP 503 from the platform")
    assert w.evaluate(NOW + timedelta(hours=1)) == []  # his own feed failing: unknown, the state kept
    assert w.store.watch_state("musk-quiet").firing_since == NOW


def test_a_source_removed_from_the_settings_no_longer_holds_back_a_silence(watching, write_feed):
    w = watching(SILENCE)
    w.store_posts([post("1", "elonmusk", "hello", 80)])
    threads = write_feed([post("t1", "elonmusk", "hi", 90, platform="threads")], name="threads.jsonl")
    old = Pipeline(w.store, w.detector, {"old": ReplaySource("old", threads)}, [], exchanges=PEOPLE)
    assert old.poll("old", threads.name) is not None
    w.store.save_failed_poll("old", threads.name, utcnow(), "HTTP 190: token expired")  # then removed
    (alert,) = w.evaluate()  # the settings now poll "replay" only
    assert alert["rule"]["id"] == "musk-quiet" and alert["platforms"] == ["threads", "x"]


def test_silence_clears_when_the_person_posts_and_fires_again_later(watching):
    w = watching(SILENCE)
    w.store_posts([post("1", "elonmusk", "hello", 80)])
    (first,) = w.evaluate()
    w.store_posts([post("2", "elonmusk", "back", 1)])
    assert w.evaluate() == []
    assert w.store.watch_state("musk-quiet").firing_since is None
    (second,) = w.evaluate(NOW + timedelta(days=3))
    assert second["key"] != first["key"]


def test_a_single_account_can_be_watched_for_silence(watching):
    w = watching(Watch("finkd-quiet", "silence", account="x:finkd", days=1))
    w.store_posts([post("1", "FinKD", "hello", 33), post("2", "zuck", "hi", 1, platform="threads")])
    (alert,) = w.evaluate()
    assert alert["people"] == [] and "x:finkd has not posted for 1.4 days" in alert["text"]


# -- channels ----------------------------------------------------------------------------------------


def test_a_watch_alert_reaches_a_webhook_once_signed_with_its_key_and_valid_against_the_schema(watching):
    with Receiver() as receiver:
        w = watching(FREQUENCY, channels=[webhook(receiver)])
        w.store_posts(taunts(3))
        w.evaluate()
        w.evaluate(NOW + timedelta(minutes=1))
        (request,) = receiver.received
    jsonschema.validate(request.json, SCHEMA)
    assert request.json["type"] == "watch" and request.json["rule"]["id"] == "musk-zuck"
    assert request.json["id"] == request.headers["X-Ringside-Idempotency-Key"]


def test_every_kind_of_watch_alert_validates_against_the_webhook_schema(watching):
    zuck_taunts = [post(f"z{n}", "finkd", f"@elonmusk {n}", n + 1, mentions=["elonmusk"]) for n in range(3)]
    with Receiver() as receiver:
        w = watching(FREQUENCY, SPIKE, SILENCE, channels=[webhook(receiver)])
        w.store_posts(
            baseline() + challenges([1, 2, 3, 4, 5]) + zuck_taunts + [post("m", "elonmusk", "x", 80)]
        )
        w.evaluate()
        bodies = [r.json for r in receiver.received if r.json["type"] == "watch"]
    assert sorted(b["rule"]["category"] for b in bodies) == ["frequency", "silence", "spike"]
    for body in bodies:
        jsonschema.validate(body, SCHEMA)


def test_the_console_shows_what_the_watch_measured_and_the_posts_behind_it(watching):
    stream = io.StringIO()
    w = watching(FREQUENCY, channels=[ConsoleNotifier("console", stream, color=False)])
    w.store_posts(taunts(3))
    w.evaluate()
    text = stream.getvalue()
    assert "🔁 FREQUENCY · SEVERITY 4/5 · WATCH MUSK-ZUCK" in text
    assert "Elon Musk and Mark Zuckerberg addressed each other 3 times in the last 48h" in text
    assert "· @zuck on Threads · 2026-05-31 18:00 UTC: @elonmusk again 2" in text


def test_slack_and_apprise_render_a_watch_alert_with_its_measure_and_posts(watching):
    w = watching(FREQUENCY)
    w.store_posts(taunts(12))
    w.pipeline().evaluate_watches(NOW)
    (alert,) = [a for a in w.store.pending_alerts("collector") if a.payload.get("kind") == "watch"]
    message = slack_message(alert)
    assert message["blocks"][0]["text"]["text"] == "🔁 Frequency · severity 4/5 · watch musk-zuck"
    assert "addressed each other 12 times" in message["text"]
    assert len(message["blocks"]) == 3 + 10  # the newest ten posts
    title, body = apprise_message(alert)
    assert title == "Frequency · severity 4/5 · watch musk-zuck"
    assert "addressed each other 12 times" in body and "@\u200belonmusk again 11" in body


# -- configuration -----------------------------------------------------------------------------------

PEOPLE_TOML = """
[[people]]
id = "musk"
accounts = ["x:elonmusk"]

[[people]]
id = "zuck"
accounts = ["instagram:zuck", "x:finkd"]
"""
WATCHES = (
    PEOPLE_TOML
    + """
[[watches]]
name = "musk-zuck-back-and-forth"
type = "frequency"
people = ["musk", "zuck"]
count = 3
hours = 48
severity = 4
throttle = "12h"

[[watches]]
name = "challenge-surge"
type = "spike"
category = "challenge"
hours = 6
ratio = 3
baseline_days = 7
min_hits = 5

[[watches]]
name = "musk-quiet"
type = "silence"
person = "musk"
days = 3
severity = 2
"""
)


def readme_example() -> str:
    """The watches example in the README, which a user copies."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Frequency, spike and silence rules", 1)[1]
    return section.split("```toml", 1)[1].split("```", 1)[0]


def test_the_readme_example_of_watches_loads(tmp_path, write_config, write_feed):
    config = write_config(replay_config(write_feed([]), tmp_path / "r.db", PEOPLE_TOML + readme_example()))
    watches = load_settings(config, environ={}).watches
    assert [(w.name, w.type) for w in watches] == [
        ("musk-zuck-back-and-forth", "frequency"),
        ("challenge-surge", "spike"),
        ("musk-quiet", "silence"),
    ]
    assert watches[0].throttle == 12 * 3600 and watches[1].min_hits == 5 and watches[2].people == ("musk",)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (('type = "frequency"', 'type = "flatline"'), "watches[0].type: unknown watch type 'flatline'"),
        (("count = 3\n", ""), "watches[0].count: missing; expected a whole number"),
        (("hours = 48\n", ""), "watches[0].hours: missing; expected a number above zero"),
        (
            ('people = ["musk", "zuck"]', 'people = ["musk", "bezos"]'),
            "watches[0].people: 'bezos' is not the id",
        ),
        (
            ('person = "musk"', 'person = "elon"'),
            "watches[2].person: 'elon' is not the id of a [[people]] table",
        ),
        (
            ('person = "musk"', 'account = "twitter:elonmusk"'),
            "watches[2].account: 'twitter:elonmusk': 'twitter' is not a platform",
        ),
        (('person = "musk"', 'account = "x:"'), "watches[2].account: 'x:': expected platform:handle"),
        (("days = 3\n", "days = 0\n"), "watches[2].days: expected a number above zero, got 0"),
        (("ratio = 3\n", "ratio = 1\n"), "watches[1].ratio: expected a number above 1"),
        (("days = 3\n", "days = 3\ncount = 2\n"), "watches[2].count: unknown key"),
        (
            ('name = "musk-quiet"', 'name = "challenge-surge"'),
            "watches[2].name: 'challenge-surge' is used twice",
        ),
    ],
)
def test_a_wrong_watch_is_one_line_naming_the_file_and_key(tmp_path, write_config, write_feed, change, error):
    text = WATCHES.replace(*change)
    config = write_config(replay_config(write_feed([]), tmp_path / "r.db", text))
    with pytest.raises(ConfigError) as raised:
        load_settings(config, environ={})
    assert str(raised.value) == f"{config}: {error}" or str(raised.value).startswith(f"{config}: {error}")
    assert "\n" not in str(raised.value)


def test_a_spike_on_a_category_the_rules_lack_is_refused_before_anything_runs(
    tmp_path, write_config, write_feed, detector
):
    text = WATCHES.replace('category = "challenge"', 'category = "chalenge"')
    config = write_config(replay_config(write_feed([]), tmp_path / "r.db", text))
    settings = load_settings(config, environ={})
    with Store.open(":memory:") as store, pytest.raises(ConfigError) as raised:
        build_pipeline(settings, store, detector=detector, notifiers=[])
    assert str(raised.value).startswith(
        f"{config}: watches[1].category: 'chalenge' is no category of the rules in"
    )
    assert "(they have: challenge, response, rivalry, taunt, veto)" in str(raised.value)


def test_a_watch_named_as_a_rule_is_refused_as_mutes_and_rule_filters_would_take_both(
    tmp_path, write_config, write_feed, detector
):
    text = WATCHES.replace('name = "musk-quiet"', 'name = "cage-fight"')
    config = write_config(replay_config(write_feed([]), tmp_path / "r.db", text))
    settings = load_settings(config, environ={})
    with Store.open(":memory:") as store, pytest.raises(ConfigError) as raised:
        build_pipeline(settings, store, detector=detector, notifiers=[])
    assert str(raised.value).startswith(f"{config}: watches[2].name: 'cage-fight' is the id of a rule in ")


def test_check_config_lists_the_watches_and_refuses_an_unknown_category(
    tmp_path, write_config, write_feed, capsys
):
    config = write_config(replay_config(write_feed([]), tmp_path / "r.db", WATCHES))
    assert run_bot.main(["--config", str(config), "check-config"]) == 0
    err = capsys.readouterr().err
    assert (
        "watch: musk-zuck-back-and-forth (frequency, severity 4, throttle 43200s): fires when musk and zuck "
        "mention, reply to or quote each other at least 3 times within 48h"
    ) in err
    assert "watch: musk-quiet (silence, severity 2): fires when musk posts nothing for 3 days" in err
    bad = write_config(
        replay_config(write_feed([]), tmp_path / "r.db", WATCHES.replace('"challenge"', '"x"')), "bad.toml"
    )
    assert run_bot.main(["--config", str(bad), "check-config"]) == 2
    assert "watches[1].category: 'x' is no category" in capsys.readouterr().err


def test_once_evaluates_the_watches_and_prints_a_frequency_alert(tmp_path, write_config, write_feed):
    now = datetime.now(UTC)
    records = [
        {
            "platform": "x",
            "id": str(n),
            "author": "elonmusk",
            "text": f"@finkd round {n}",
            "mentions": ["finkd"],
        }
        | {"created_at": iso(now - timedelta(hours=3 - n))}
        for n in range(3)
    ]
    feed = write_feed(records)
    config = write_config(replay_config(feed, tmp_path / "r.db", WATCHES))
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), "once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "🔁 FREQUENCY · SEVERITY 4/5 · WATCH MUSK-ZUCK-BACK-AND-FORTH" in done.stdout
    assert "addressed each other 3 times in the last 48h" in done.stdout
    again = subprocess.run(
        [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), "once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "FREQUENCY" not in again.stdout  # still firing: not again


# -- schema ------------------------------------------------------------------------------------------


def test_a_database_of_the_previous_schema_keeps_every_row_when_it_gains_watch_state(tmp_path):
    from tests.test_store import fill_a_schema_6_database

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    migrate(db, MIGRATIONS[:-1])
    fill_a_schema_6_database(db)
    tables = [t for t in db.table_names() if not t.startswith("posts_fts")]
    # Compared as multisets: some tables (x_reads) have no rowid to order by.
    before = {table: Counter(db.execute(f"SELECT * FROM {table}").fetchall()) for table in tables}
    db.close()

    with Store.open(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
        for table, rows in before.items():
            assert Counter(store.db.execute(f"SELECT * FROM {table}").fetchall()) == rows, table
        assert store.last_post_at("x:ElonMusk") is not None
        latest = "SELECT max(created_at) FROM posts WHERE platform = 'x' AND lower(author) = 'a'"
        plan = store.db.execute(f"EXPLAIN QUERY PLAN {latest}").fetchall()
        assert "posts_account_created" in str(plan)
    assert sqlite3.connect(path).execute("SELECT count(*) FROM watch_state").fetchone() == (0,)


def test_the_service_evaluates_the_watches_in_a_job_of_their_own_and_delivers_the_alert(
    tmp_path, write_config, write_feed
):
    from bot.service import Service
    from tests.test_service import wait_for

    now = datetime.now(UTC)
    feed = write_feed(
        [
            post(str(n), "finkd", "@elonmusk", 0, mentions=["elonmusk"]) | {"created_at": iso(now)}
            for n in range(2)
        ]
    )
    text = replay_config(feed, tmp_path / "r.db", WATCHES.replace("count = 3", "count = 2"))
    config = write_config(text.replace('jitter = "0s"', 'jitter = "0s"\nwatch_every = "1s"'))
    settings = load_settings(config, environ={})
    out = io.StringIO()
    with Store.open(settings.database) as store:
        pipeline = build_pipeline(settings, store, notifiers=[ConsoleNotifier("console", out, color=False)])
        service = Service(settings, pipeline)
        stop = threading.Event()
        runner = threading.Thread(target=service.run_until, args=[stop])
        runner.start()
        try:
            assert wait_for(lambda: "WATCH MUSK-ZUCK-BACK-AND-FORTH" in out.getvalue())
        finally:
            stop.set()
            runner.join(10)
        assert store.db.execute("SELECT count(*) FROM alerts WHERE key LIKE 'rs1f-%'").fetchone() == (1,)
    assert out.getvalue().count("WATCH MUSK-ZUCK-BACK-AND-FORTH") == 1
