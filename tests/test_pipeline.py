"""The pipeline end to end on real SQLite: poll -> match -> store -> deliver, and failures kept apart."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import responses

import run_bot
from bot.delivery import retry_delay
from bot.models import Fetch
from bot.notifiers import DeliveryError
from bot.notifiers.console import ConsoleNotifier
from bot.pipeline import Pipeline
from bot.sources.replay import ReplaySource
from bot.timeutil import utcnow
from config.settings import Delivery
from storage import Store
from storage.store import Alert
from tests.conftest import DEMO_FEED, post_record, replay_config
from tests.xapi import API, USERS, timeline, tweet


class RecordingChannel:
    """A channel that keeps what it was sent, and refuses the first `failures` attempts."""

    def __init__(self, name: str = "recorder", failures: int = 0, retry: bool = True) -> None:
        self.name = name
        self.failures = failures
        self.retry = retry
        self.received: list[str] = []
        self.attempts = 0

    def send(self, alert: Alert) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise DeliveryError("receiver answered 500", retry=self.retry)
        self.received.append(alert.payload["post"]["id"])


def demo_pipeline(store: Store, detector, *channels) -> Pipeline:
    return Pipeline(store, detector, {"demo": ReplaySource("demo", DEMO_FEED)}, list(channels))


def hits_by_post(store: Store) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for text, category in store.db.execute(
        "SELECT p.text, h.category FROM hits h JOIN posts p ON p.key = h.post_key"
    ):
        found.setdefault(text, set()).add(category)
    return found


def test_the_demo_feed_flags_the_cage_match_and_its_french_retelling_but_not_ordinary_posts(store, detector):
    pipeline = demo_pipeline(store, detector)
    pipeline.poll("demo", DEMO_FEED.name)
    hits = hits_by_post(store)
    assert hits["I'm up for a cage match if he is lol"] == {"challenge"}
    assert (
        "challenge"
        in hits["Elon Musk à propos de Mark Zuckerberg : « Je suis prêt pour un combat en cage lol »"]
    )
    assert hits["Send Me Location"] == {"response"}
    flagged = {text for text, categories in hits.items() if categories - {"response"}}
    for ordinary in (
        "Starship static fire went well today. Next step: full stack.",
        "Throwback: Nicolas Cage fights bees in the most unhinged remake ever made",
        "Can someone send me the location of the meetup tonight? The link is broken",
        "Our fight against cancer continues: new trial results out today",
        "Au zoo de Vincennes, la nouvelle cage des perroquets est enfin ouverte",
        "Let's do this. Welcome to Threads. 🔥",
    ):
        assert ordinary not in flagged


def test_a_response_on_its_own_is_stored_but_not_alerted(store, detector):
    channel = RecordingChannel()
    demo_pipeline(store, detector, channel).poll("demo", DEMO_FEED.name)
    queued = store.db.execute(
        "SELECT count(*) FROM alerts a JOIN hits h ON h.id = a.hit_id WHERE h.category = 'response'"
    ).fetchone()
    assert queued == (0,)


def test_delivery_prints_each_alert_once_with_the_matched_words_marked(store, detector):
    out = io.StringIO()
    pipeline = demo_pipeline(store, detector, ConsoleNotifier("console", stream=out, color=False))
    pipeline.poll("demo", DEMO_FEED.name)
    first = pipeline.deliver_all()["console"]
    second = pipeline.deliver_all()["console"]
    assert first.sent == store.counts()["alerts"] > 0 and second.sent == 0
    text = out.getvalue()
    assert "I'm up for a **cage match** if he is lol" in text
    assert "@elonmusk on X · 2023-06-21 02:58 UTC · reply" in text
    assert text.count("https://x.com/elonmusk/status/1671370010000000004") == 1


def test_running_once_twice_over_the_same_feed_adds_nothing_the_second_time(tmp_path, write_config, capsys):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db"))
    assert run_bot.main(["--config", str(config), "once"]) == 0
    store = Store.open(tmp_path / "r.db")
    before = store.counts()
    store.close()
    first_out = capsys.readouterr().out
    assert run_bot.main(["--config", str(config), "once"]) == 0
    store = Store.open(tmp_path / "r.db")
    assert store.counts() == before and before["alerts"] > 0
    assert store.alert_counts() == {"sent": before["alerts"]}
    store.close()
    assert "cage match" in first_out and capsys.readouterr().out == ""


@responses.activate
def test_a_failing_x_account_stops_neither_the_other_account_nor_the_replay(
    tmp_path, write_config, monkeypatch, caplog
):
    monkeypatch.setenv("X_BEARER_TOKEN", "AAAA-secret-token")
    responses.get(
        f"{API}/users/by",
        json={
            "data": [
                {"id": USERS["elonmusk"], "username": "elonmusk", "name": "E"},
                {"id": USERS["finkd"], "username": "finkd", "name": "M"},
            ]
        },
    )
    responses.get(
        f"{API}/users/{USERS['elonmusk']}/tweets", status=503, json={"title": "Service Unavailable"}
    )
    responses.get(
        f"{API}/users/{USERS['finkd']}/tweets",
        json=timeline(tweet("900", "Send Me Location", author="finkd"), users=("finkd",)),
    )
    x_source = '[[sources]]\nname = "x"\ntype = "x"\naccounts = ["elonmusk", "finkd"]\n'
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db", extra=x_source))
    assert run_bot.main(["--config", str(config), "once"]) == 1
    store = Store.open(tmp_path / "r.db")
    assert store.db.execute(
        "SELECT count(*) FROM posts WHERE platform = 'x' AND author = 'finkd'"
    ).fetchone() == (1,)
    assert store.counts()["posts"] == 29
    assert store.account_ids("x") == {"elonmusk": USERS["elonmusk"], "finkd": USERS["finkd"]}
    failed = store.db.execute("SELECT feed, error FROM runs WHERE error IS NOT NULL").fetchall()
    assert failed == [("elonmusk", "X server error (503); retrying next poll")]
    store.close()
    assert "x:elonmusk: poll failed: X server error (503)" in caplog.text
    assert "AAAA-secret-token" not in caplog.text


@responses.activate
def test_a_rate_limited_feed_is_not_polled_again_before_its_reset(store, detector):
    from tests.test_x_source import make_source

    reset = int((utcnow() + timedelta(minutes=10)).timestamp())
    responses.get(
        f"{API}/users/{USERS['elonmusk']}/tweets",
        status=429,
        headers={"x-rate-limit-reset": str(reset)},
        json={"title": "Too Many Requests"},
    )
    pipeline = Pipeline(store, detector, {"x": make_source()}, [])
    store.save_poll("x", "elonmusk", utcnow(), Fetch((), "100", 0), [], [])
    assert pipeline.poll("x", "elonmusk") is None
    assert pipeline.poll("x", "elonmusk") is None
    assert len(responses.calls) == 1
    state = store.feed_state("x", "elonmusk")
    assert state.cursor == "100" and int(state.paused_until.timestamp()) == reset


def test_a_failed_delivery_is_retried_later_and_keeps_the_channels_order(store, detector):
    channel = RecordingChannel(failures=1)
    pipeline = demo_pipeline(store, detector, channel)
    pipeline.poll("demo", DEMO_FEED.name)
    assert pipeline.deliver(channel).failed == 1
    assert channel.received == []
    (head, *_rest) = store.pending_alerts(channel.name)
    assert head.attempts == 1 and head.next_attempt_at > utcnow()
    store.db.execute("UPDATE alerts SET next_attempt_at = ?", ["2000-01-01T00:00:00.000+00:00"])
    assert pipeline.deliver(channel).sent == store.counts()["alerts"]
    in_order = [
        r[0] for r in store.db.execute("SELECT json_extract(payload, '$.post.id') FROM alerts ORDER BY id")
    ]
    assert channel.received == in_order


def test_a_refused_alert_is_dead_with_its_reason_and_the_next_one_goes_out(store, detector):
    channel = RecordingChannel(failures=1, retry=False)
    pipeline = demo_pipeline(store, detector, channel)
    pipeline.poll("demo", DEMO_FEED.name)
    result = pipeline.deliver(channel)
    assert result.dead == 1 and result.sent == store.counts()["alerts"] - 1
    assert store.db.execute("SELECT last_error FROM alerts WHERE status = 'dead'").fetchall() == [
        ("refused (receiver answered 500)",)  # marked: a refusal streak counts it
    ]


def test_an_alert_is_dead_after_the_configured_number_of_attempts(store, detector):
    channel = RecordingChannel(failures=99)
    pipeline = demo_pipeline(store, detector, channel)
    pipeline.courier.delivery = Delivery(max_attempts=3)
    pipeline.poll("demo", DEMO_FEED.name)
    for _ in range(3):
        store.db.execute("UPDATE alerts SET next_attempt_at = ?", ["2000-01-01T00:00:00.000+00:00"])
        pipeline.deliver(channel)
    assert store.db.execute("SELECT status, attempts FROM alerts ORDER BY id LIMIT 1").fetchone() == (
        "dead",
        3,
    )


def test_one_failing_channel_does_not_hold_back_another(store, detector):
    broken, working = RecordingChannel("broken", failures=99), RecordingChannel("working")
    pipeline = demo_pipeline(store, detector, broken, working)
    pipeline.poll("demo", DEMO_FEED.name)
    results = pipeline.deliver_all()
    assert results["broken"].failed == 1 and results["working"].sent == len(working.received) > 0


def test_a_channel_that_crashes_is_retried_like_any_failure(store, detector):
    class Crashing:
        name = "crashing"

        def send(self, alert):
            raise RuntimeError("bug in a channel")

    pipeline = demo_pipeline(store, detector, Crashing())
    pipeline.poll("demo", DEMO_FEED.name)
    assert pipeline.deliver_all()["crashing"].failed == 1
    assert store.db.execute("SELECT last_error FROM alerts ORDER BY id LIMIT 1").fetchone() == (
        "RuntimeError: bug in a channel",
    )


def test_retry_delays_grow_and_honour_retry_after():
    assert 7.5 <= retry_delay(1) <= 15
    assert 60 <= retry_delay(4) <= 120
    assert retry_delay(30) <= 3600
    assert retry_delay(1, retry_after=90) == 90


def test_a_feed_with_a_broken_line_still_stores_the_rest(store, detector, write_feed):
    feed = write_feed([post_record("1", "I'm up for a cage match"), "garbage", post_record("2", "hello")])
    pipeline = Pipeline(store, detector, {"f": ReplaySource("f", feed)}, [])
    saved = pipeline.poll("f", feed.name)
    assert (saved.new_posts, saved.new_hits) == (2, 1)


# -- a post that comes back with other content (issue 11, item 4) ------------------------------------------


def test_a_post_fetched_again_with_other_text_keeps_its_hit_on_the_text_it_matched(
    store, detector, write_feed
):
    feed = write_feed(
        [
            post_record("1", "I'm up for a cage match if he is lol", "2023-06-21T02:58:00Z"),
            post_record("1", "Nice weather today", "2023-06-21T03:10:00Z"),
        ]
    )
    channel = RecordingChannel()
    pipeline = Pipeline(store, detector, {"f": ReplaySource("f", feed)}, [channel])
    pipeline.poll("f", feed.name)
    (latest,) = store.report("latest-hits").rows
    assert latest[-2] == "I'm up for a cage match if he is lol"
    assert store.db.execute("SELECT text FROM posts").fetchall() == [("Nice weather today",)]
    versions = store.db.execute("SELECT version, text FROM post_versions ORDER BY version").fetchall()
    assert versions == [(1, "I'm up for a cage match if he is lol"), (2, "Nice weather today")]
    assert store.search("weather").rows and not store.search("cage").rows  # search sees the current text


@responses.activate
def test_an_edit_that_newly_matches_alerts_once_with_the_edited_text_and_a_later_edit_does_not_repeat_it(
    store, detector
):
    from tests.test_x_source import TIMELINE, make_source

    first = tweet("10", "Nice weather today")
    edit = tweet(
        "11", "Nice weather. I'm up for a cage match if he is lol", edit_history_tweet_ids=["10", "11"]
    )
    again = tweet("12", "I'm up for a cage match if he is, lol", edit_history_tweet_ids=["10", "11", "12"])
    for page in (timeline(first), timeline(edit), timeline(again)):
        responses.get(TIMELINE, json=page)
    channel = RecordingChannel()
    pipeline = Pipeline(store, detector, {"x": make_source()}, [channel])
    for _ in range(3):
        pipeline.poll("x", "elonmusk")
    pipeline.deliver_all()
    assert channel.received == ["10"]  # one alert, for the version that newly matched
    (alert,) = store.db.execute("SELECT json_extract(payload, '$.post.text') FROM alerts").fetchall()
    assert alert == (edit["text"],)
    (latest,) = store.report("latest-hits").rows
    assert latest[-2] == edit["text"]
    assert store.db.execute("SELECT version FROM hits").fetchall() == [(2,)]
    assert store.db.execute("SELECT version, version_id FROM posts").fetchall() == [(3, "12")]


def test_a_text_swapped_for_a_notice_and_back_is_its_first_version_again_and_alerts_once(
    store, detector, write_feed
):
    challenge = "I'm up for a cage match if he is lol"
    feed = write_feed(
        [
            post_record("1", challenge, "2023-06-21T02:58:00Z"),
            post_record("1", "This post is unavailable in your country", "2023-06-21T03:00:00Z"),
            post_record("1", challenge, "2023-06-21T03:02:00Z"),
        ]
    )
    channel = RecordingChannel()
    pipeline = Pipeline(store, detector, {"f": ReplaySource("f", feed)}, [channel])
    pipeline.poll("f", feed.name)
    pipeline.deliver_all()
    assert channel.received == ["1"]
    assert store.db.execute("SELECT text, version FROM posts").fetchall() == [(challenge, 1)]
    assert store.db.execute("SELECT count(*) FROM post_versions").fetchone() == (2,)


# -- one bad record never stops a feed (issue 11, item 13) --------------------------------------------------


def test_a_lone_surrogate_in_a_replay_record_is_replaced_and_the_feed_goes_on(store, detector, write_feed):
    feed = write_feed(
        [
            '{"platform": "x", "id": "1", "author": "elonmusk", "text": "I\'m up for a cage match \\ud800",'
            ' "created_at": "2023-06-21T02:58:00Z", "lang": "\\udfff"}',
            post_record("2", "hello", "2023-06-21T02:59:00Z"),
        ]
    )
    saved = Pipeline(store, detector, {"f": ReplaySource("f", feed)}, []).poll("f", feed.name)
    assert saved is not None and (saved.new_posts, saved.new_hits) == (2, 1)
    assert store.db.execute("SELECT text, lang FROM posts WHERE id = '1'").fetchone() == (
        "I'm up for a cage match \ufffd",
        "\ufffd",
    )
    cursor = store.feed_state("f", feed.name).cursor
    assert ReplaySource("f", feed).bytes_done(cursor) == feed.stat().st_size  # past both lines


@responses.activate
def test_a_tweet_with_a_lone_surrogate_is_stored_with_a_replacement_character(store, detector):
    from tests.test_x_source import TIMELINE, make_source

    responses.get(TIMELINE, json=timeline(tweet("300", "I'm up for a cage match \ud800")))
    saved = Pipeline(store, detector, {"x": make_source()}, []).poll("x", "elonmusk")
    assert saved is not None and saved.new_hits == 1
    assert store.db.execute("SELECT text FROM posts").fetchone() == ("I'm up for a cage match \ufffd",)


@responses.activate
def test_a_tracked_persons_posts_dated_year_1_and_9999_are_quarantined_and_the_poll_goes_on(
    store, detector, caplog
):
    from tests.test_exchanges import PEOPLE
    from tests.test_x_source import TIMELINE, make_source

    responses.get(
        TIMELINE,
        json=timeline(
            tweet("301", "hello"),
            tweet("302", "I'm up for a cage match", created_at="0001-01-01T00:00:00.000Z"),
            tweet("303", "I'm up for a cage match lol", created_at="9999-12-31T23:59:59.000Z"),
        ),
    )
    pipeline = Pipeline(store, detector, {"x": make_source()}, [], exchanges=PEOPLE)
    saved = pipeline.poll("x", "elonmusk")
    assert saved is not None and (saved.new_posts, len(saved.quarantined)) == (1, 2)
    assert store.db.execute("SELECT id FROM posts").fetchall() == [("301",)]
    assert store.feed_state("x", "elonmusk").cursor == "303"
    rows = store.db.execute(
        "SELECT source, feed, json_extract(record, '$.id'), error FROM quarantine ORDER BY 3"
    ).fetchall()
    assert [row[:3] for row in rows] == [("x", "elonmusk", "302"), ("x", "elonmusk", "303")]
    assert all("created_at" in error for *_, error in rows)
    assert caplog.text.count("quarantined") == 2
    assert pipeline.poll("x", "elonmusk") is not None  # the next poll is not stuck either


def test_a_broken_replay_line_is_quarantined_and_the_quarantine_report_shows_it(
    tmp_path, write_config, write_feed, capsys
):
    feed = write_feed(["garbage", post_record("1", "I'm up for a cage match if he is lol")])
    config = write_config(replay_config(feed, tmp_path / "r.db"))
    assert run_bot.main(["--config", str(config), "once"]) == 0
    capsys.readouterr()
    assert run_bot.main(["--config", str(config), "report", "quarantine", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["source"], row["feed"]) == ("demo", feed.name)
    assert "garbage" in row["record"] and "line 1" in row["error"]
    for account, rows in ((feed.name, 1), ("demo", 1), ("elsewhere", 0)):
        assert (
            run_bot.main(
                ["--config", str(config), "report", "quarantine", "--format", "json", "--account", account]
            )
            == 0
        )
        assert len(json.loads(capsys.readouterr().out)) == rows, account


def test_a_replay_line_whose_time_overflows_in_utc_is_quarantined_and_the_file_still_replays(
    store, detector, write_feed
):
    feed = write_feed(
        [
            post_record("1", "I'm up for a cage match", "9999-12-31T23:59:59-05:00"),
            post_record("2", "hello", "2023-06-21T02:59:00Z"),
        ]
    )
    saved = Pipeline(store, detector, {"f": ReplaySource("f", feed)}, []).poll("f", feed.name)
    assert saved is not None and saved.new_posts == 1
    (error,) = saved.quarantined
    assert error.startswith("line 1: ") and "out of range" in error


@responses.activate
def test_a_malformed_user_or_tweet_id_in_an_x_answer_quarantines_that_tweet_alone(store, detector):
    from tests.test_x_source import TIMELINE, make_source

    page = timeline(tweet("310", "I'm up for a cage match"), tweet("311", "hello"))
    page["includes"]["users"].append({"id": "999", "name": "no username"})  # X left a field out
    page["includes"]["tweets"] = [{"text": "an included post without an id"}]
    page["data"].append({**tweet("312", "later"), "id": "31x"})
    responses.get(TIMELINE, json=page)
    saved = Pipeline(store, detector, {"x": make_source()}, []).poll("x", "elonmusk")
    assert saved is not None and (saved.new_posts, saved.new_hits, len(saved.quarantined)) == (2, 1, 1)
    assert store.db.execute("SELECT id, author FROM posts ORDER BY id").fetchall() == [
        ("310", "elonmusk"),
        ("311", "elonmusk"),
    ]
    (error,) = store.db.execute("SELECT error FROM quarantine").fetchone()
    assert "id" in error and "31x" in error
