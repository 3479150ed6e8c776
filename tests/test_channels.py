"""Channels against a real HTTP receiver on 127.0.0.1: what arrives, how many times, signed and shaped how."""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import logging
import re
import sqlite3
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest
import responses

from bot.delivery import REFUSALS_TO_PAUSE, Courier
from bot.notifiers.apprise import AppriseNotifier, apprise_message
from bot.notifiers.console import ConsoleNotifier
from bot.notifiers.slack import BLOCK_LIMIT, SECTION_LIMIT, SlackNotifier, slack_message
from bot.notifiers.webhook import WebhookNotifier
from bot.pipeline import Pipeline
from bot.sources.replay import ReplaySource
from bot.timeutil import iso, utcnow
from config.settings import Delivery
from storage import Store
from storage.store import Alert
from tests.conftest import DEMO_FEED, ROOT, post_record
from tests.receiver import DROP, HANG, Answer, Receiver, status

SECRET = "whsec-test-signing-secret"
SCHEMA = json.loads((ROOT / "config" / "webhook.schema.json").read_text())
FAST = Delivery(max_attempts=5, retry_base=0.01, retry_max=0.05)


def webhook(receiver: Receiver, name: str = "hook", timeout: float = 1.0) -> WebhookNotifier:
    return WebhookNotifier(name, receiver.url, SECRET, timeout=timeout)


def demo(store: Store, detector, *channels, delivery: Delivery = FAST, **kwargs) -> Pipeline:
    pipeline = Pipeline(
        store,
        detector,
        {"demo": ReplaySource("demo", DEMO_FEED)},
        list(channels),
        delivery=delivery,
        **kwargs,
    )
    pipeline.poll("demo", DEMO_FEED.name)
    return pipeline


def make_due(store: Store) -> None:
    """Skip the wait before retries: what a test would otherwise sleep for."""
    store.db.execute("UPDATE alerts SET next_attempt_at = ?", ["2000-01-01T00:00:00.000+00:00"])


def keys_of(requests) -> list[str]:
    return [r.headers["X-Ringside-Idempotency-Key"] for r in requests]


# -- webhook --------------------------------------------------------------------------------------------


def test_a_webhook_post_is_signed_over_timestamp_and_body_and_matches_the_schema(store, detector):
    with Receiver() as receiver:
        demo(store, detector, webhook(receiver)).deliver_all()
    assert len(receiver.received) == store.counts()["alerts"] > 0
    for request in receiver.received:
        timestamp = request.headers["X-Ringside-Timestamp"]
        expected = hmac.new(
            SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
        ).hexdigest()
        assert request.headers["X-Ringside-Signature"] == f"sha256={expected}"
        assert request.headers["Content-Type"] == "application/json"
        jsonschema.validate(request.json, SCHEMA)
        assert request.json["id"] == request.headers["X-Ringside-Idempotency-Key"]
    first = receiver.received[0].json
    assert first["post"]["text"] == "I'm up for a cage match if he is lol"
    start, end, term = first["spans"][0]
    assert first["post"]["text"][start:end] == "cage match" and term == "cage match"


def test_a_500_is_retried_and_the_alert_arrives_once_with_the_same_key_and_body(store, detector):
    with Receiver() as receiver:
        receiver.answer(status(500, "oops"))
        pipeline = demo(store, detector, webhook(receiver))
        assert pipeline.deliver_all()["hook"].failed == 1
        make_due(store)
        pipeline.deliver_all()
    first, second, *_ = receiver.received
    assert not first.accepted and second.accepted
    assert first.headers["X-Ringside-Idempotency-Key"] == second.headers["X-Ringside-Idempotency-Key"]
    assert first.body == second.body
    accepted = keys_of(receiver.accepted())
    assert len(accepted) == len(set(accepted)) == store.counts()["alerts"]
    assert store.alert_counts() == {"sent": store.counts()["alerts"]}


def test_retry_after_is_honoured_from_the_header_or_discords_json(store, detector):
    with Receiver() as receiver:
        receiver.answer(status(429, "slow down", Retry_After="120"))
        pipeline = demo(
            store, detector, webhook(receiver), delivery=Delivery(retry_base=0.01, retry_max=3600)
        )
        pipeline.deliver_all()
        (head, *_) = store.pending_alerts("hook")
        assert head.next_attempt_at >= utcnow() + timedelta(seconds=118)
        make_due(store)
        receiver.answer(status(429, '{"message": "You are being rate limited.", "retry_after": 64.5}'))
        pipeline.deliver_all()
        (head, *_) = store.pending_alerts("hook")
        assert head.next_attempt_at >= utcnow() + timedelta(seconds=63)
    assert len(receiver.received) == 2  # the head waited; nothing behind it jumped the queue


def test_a_receiver_that_hangs_past_the_timeout_is_a_failed_attempt_retried_later(store, detector):
    with Receiver() as receiver:
        receiver.answer(HANG)
        pipeline = demo(store, detector, webhook(receiver, timeout=0.5))
        assert pipeline.deliver_all()["hook"].failed == 1
        assert store.db.execute("SELECT last_error FROM alerts WHERE attempts = 1").fetchone() == (
            "no answer within 0.5s (timeout)",
        )
        make_due(store)
        pipeline.deliver_all()
    assert store.alert_counts() == {"sent": store.counts()["alerts"]}


def test_a_receiver_that_drip_feeds_its_answer_is_cut_off_at_the_channels_timeout(store, detector):
    # A byte every 50 ms never trips a per-read timeout of 0.5 s; the answer would take about 8 s in all.
    with Receiver() as receiver:
        receiver.answer(Answer(body="x" * 100, drip=0.05))
        pipeline = demo(store, detector, webhook(receiver, timeout=0.5))
        assert pipeline.deliver_all()["hook"].failed == 1
    assert store.db.execute("SELECT status, last_error FROM alerts WHERE attempts = 1").fetchone() == (
        "pending",
        "no answer within 0.5s (timeout)",
    )


def test_an_answer_without_a_length_that_trickles_is_cut_off_at_the_channels_timeout_too(store, detector):
    # No Content-Length: the body ends when the connection closes, and http.client has by then handed the
    # socket from the connection to the response. About 4 s of body against a 0.5 s timeout.
    with Receiver() as receiver:
        receiver.answer(Answer(body="x" * 80, unsized=True, trickle=0.05))
        pipeline = demo(store, detector, webhook(receiver, timeout=0.5))
        assert pipeline.deliver_all()["hook"].failed == 1
        time.sleep(0.2)  # the receiver notices the hang-up at its next write
        (answered,) = receiver.received
        assert answered.body_bytes_sent < 80  # the client hung up at its deadline, not at the end of the body
    assert store.db.execute("SELECT status, last_error FROM alerts WHERE attempts = 1").fetchone() == (
        "pending",
        "no answer within 0.5s (timeout)",
    )


def test_of_an_answer_of_gigabytes_only_the_start_is_read(store, detector):
    with Receiver() as receiver:
        receiver.answer(Answer(status=500, huge=3 * 2**30))
        pipeline = demo(store, detector, webhook(receiver))
        assert pipeline.deliver_all()["hook"].failed == 1
    (error,) = store.db.execute("SELECT last_error FROM alerts WHERE attempts = 1").fetchone()
    assert error.startswith("HTTP 500: xxxxxxxx") and len(error) <= 300
    assert receiver.received[0].body_bytes_sent < 64 * 2**20  # what socket buffers took before the hang-up


@pytest.mark.parametrize(
    "value", ["inf", "1e400", "-30", "soon", "3153600000", "Fri, 31 Dec 9999 23:59:59 GMT"]
)
def test_a_retry_after_of_nonsense_or_of_years_waits_no_longer_than_retry_max(store, detector, caplog, value):
    with Receiver() as receiver:
        receiver.answer(status(429, "slow down", Retry_After=value))
        pipeline = demo(store, detector, webhook(receiver))
        with caplog.at_level(logging.WARNING):
            assert pipeline.deliver_all()["hook"].failed == 1
    (head, *_) = store.pending_alerts("hook")
    assert head.attempts == 1 and head.next_attempt_at <= utcnow() + timedelta(seconds=FAST.retry_max)
    assert "Traceback" not in caplog.text and "unexpected" not in caplog.text


class Crashing:
    """A channel with a bug: it raises a long, unexpected error instead of DeliveryError."""

    name = "crashing"
    min_interval = 0.0

    def send(self, alert: Alert) -> None:
        raise RuntimeError("line of a huge dump " * 500)


def test_a_stored_error_is_cut_to_a_few_hundred_characters(store, detector):
    demo(store, detector, Crashing()).deliver_all()
    (error,) = store.db.execute("SELECT last_error FROM alerts WHERE attempts = 1").fetchone()
    assert error.startswith("RuntimeError: line of a huge dump") and len(error) == 300


def test_a_dropped_connection_is_retried(store, detector):
    with Receiver() as receiver:
        receiver.answer(DROP)
        pipeline = demo(store, detector, webhook(receiver))
        pipeline.deliver_all()
        make_due(store)
        pipeline.deliver_all()
    assert store.alert_counts() == {"sent": store.counts()["alerts"]}
    assert len(receiver.received) == store.counts()["alerts"] + 1


@pytest.mark.parametrize("code", [400, 403, 404, 410])
def test_a_permanent_refusal_is_dead_at_once_with_one_line_naming_the_channel_not_its_url(
    store, detector, caplog, code
):
    with Receiver() as receiver:
        receiver.answer(status(code, "channel_not_found"))
        with caplog.at_level(logging.ERROR):
            result = demo(store, detector, webhook(receiver)).deliver_all()["hook"]
    assert result.dead == 1 and result.sent == store.counts()["alerts"] - 1
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith("hook: alert rs1-") and f"refused (HTTP {code}: channel_not_found)" in error
    assert receiver.url not in caplog.text and "127.0.0.1" not in caplog.text


def test_an_alert_failing_for_longer_than_max_age_is_dead(store, detector):
    with Receiver(default=status(503)) as receiver:
        pipeline = demo(store, detector, webhook(receiver), delivery=Delivery(max_attempts=100, max_age=3600))
        store.db.execute("UPDATE alerts SET created_at = ?", ["2000-01-01T00:00:00.000+00:00"])
        result = pipeline.deliver_all()["hook"]
    assert result.dead == store.counts()["alerts"]


def test_a_failing_channel_never_holds_back_another(store, detector):
    with Receiver(default=status(500)) as broken, Receiver() as working:
        pipeline = demo(store, detector, webhook(broken, "broken"), webhook(working, "working"))
        results = pipeline.deliver_all()
    assert results["broken"].failed == 1 and len(broken.received) == 1
    assert len(working.accepted()) == results["working"].sent == store.counts()["alerts"] // 2


# -- slack ----------------------------------------------------------------------------------------------


def slack_alert(text: str, spans: list, folded: int = 0) -> Alert:
    payload = {
        "key": "rs1-" + "0" * 32,
        "rule": {"id": "cage-fight", "category": "challenge", "severity": 4},
        "spans": spans,
        "post": {
            "key": "x:1",
            "platform": "x",
            "id": "1",
            "author": "elonmusk",
            "url": "https://x.com/elonmusk/status/1",
            "created_at": "2023-06-21T02:58:00.000+00:00",
            "kind": "reply",
            "lang": "en",
            "text": text,
        },
    }
    return Alert(1, "slack", payload["key"], payload, 0, utcnow(), utcnow(), folded)


def test_a_slack_message_has_a_header_who_where_when_the_text_in_bold_the_link_and_the_rule():
    message = slack_message(
        slack_alert("I'm up for a cage match if he is lol <3 & more", [[13, 23, "cage match"]], 2)
    )
    header, who, section, footer = message["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "🥊 Challenge · severity 4/5"}}
    assert who["elements"][0]["text"] == "*@elonmusk* on X · 2023-06-21 02:58 UTC · reply"
    assert section["text"]["text"] == "I'm up for a *cage match* if he is lol &lt;3 &amp; more"
    assert footer["elements"][0]["text"] == (
        "rule `cage-fight` · <https://x.com/elonmusk/status/1|open the post>"
        " · +2 more like this from @elonmusk"
    )
    assert message["text"].startswith("Challenge by @elonmusk on X: I'm up for a cage match")


def test_a_long_post_is_cut_to_slacks_3000_characters_with_an_ellipsis_and_closed_bold():
    text = "cage match " + "& " * 4000
    section = slack_message(slack_alert(text, [[0, 10, "cage match"], [5, 4000, "x"]]))["blocks"][2]
    body = section["text"]["text"]
    assert len(body) <= SECTION_LIMIT and body.endswith("*…")
    assert body.count("*") % 2 == 0 and not body.rstrip("*…").endswith("&am")


def mrkdwn_texts(message: dict) -> list[dict]:
    """Every mrkdwn text object of a Block Kit message."""
    found = [block["text"] for block in message["blocks"] if block.get("text", {}).get("type") == "mrkdwn"]
    return found + [
        e for block in message["blocks"] for e in block.get("elements", []) if e["type"] == "mrkdwn"
    ]


def literal(char: str) -> str:
    """How the Slack message spells a formatting character of a post: a date Slack cannot format, whose
    fallback Slack shows as the plain character."""
    return f"<!date^00000000^{{_}}|{char}>"


@pytest.mark.parametrize(
    ("url", "link"),
    [
        ("https://x.com/a|<!channel>", "<https://x.com/a%7C%3C!channel%3E|open the post>"),
        ("https://x.com/a?b=1&c=2", "<https://x.com/a?b=1&amp;c=2|open the post>"),
        ("javascript:alert(1)", None),
        ("https://x.com/a b", None),
        ("<!channel>", None),
    ],
)
def test_a_post_url_is_linked_only_when_it_is_http_and_then_escaped(url, link):
    alert = slack_alert("cage match", [[0, 10, "cage match"]])
    alert.payload["post"]["url"] = url
    footer = slack_message(alert)["blocks"][3]["elements"][0]["text"]
    assert footer == "rule `cage-fight`" + (f" · {link}" if link else "")
    assert "<!channel>" not in json.dumps(slack_message(alert))


def test_post_text_cannot_turn_into_slack_formatting_mentions_or_a_quote():
    text = "> *free* _money_ ~now~ `run` <!channel> @here cage match"
    message = slack_message(slack_alert(text, [[len(text) - 10, len(text), "cage match"]]))
    section = message["blocks"][2]["text"]["text"]
    assert section == (
        "\u00ad&gt; "
        + " ".join(
            f"{literal(m)}{word}{literal(m)}" for m, word in [("*", "free"), ("_", "money"), ("~", "now")]
        )
        + f" {literal('`')}run{literal('`')} &lt;!channel&gt; @here *cage match*"
    )
    assert all(text["verbatim"] is True for text in mrkdwn_texts(message))
    assert "<!channel>" not in json.dumps(message) and message["text"].count("&lt;!channel&gt;") == 1


def test_the_fallback_text_is_cut_between_entities_never_inside_one():
    message = slack_message(slack_alert("x" + "&" * 5000, [[0, 1, "x"]]))
    fallback = message["text"]
    assert len(fallback) <= SECTION_LIMIT and fallback.endswith("&amp;…")
    assert fallback.startswith("Challenge by @elonmusk on X: x&amp;&amp;")


def test_a_slack_digest_stays_within_50_blocks():
    items = [
        {"payload": slack_alert(f"cage match {i}", [[0, 10, "cage match"]]).payload, "folded": 0}
        for i in range(100)
    ]
    digest = Alert(1, "slack", "rs1d-" + "0" * 32, {"kind": "digest", "alerts": items}, 0, utcnow(), utcnow())
    message = slack_message(digest)
    assert len(message["blocks"]) <= BLOCK_LIMIT
    assert message["blocks"][0]["text"]["text"] == "Ringside digest: 100 alerts"
    assert "…and 84 more" in message["blocks"][-1]["elements"][0]["text"]


def test_slack_gets_block_kit_json_one_message_a_second(store, detector):
    with Receiver() as receiver:
        slack = SlackNotifier("slack", receiver.url, timeout=2, min_interval=0.5)
        demo(store, detector, slack).deliver_all()
    times = [r.at for r in receiver.received]
    assert len(times) == store.counts()["alerts"] >= 3
    assert all(later - earlier >= 0.45 for earlier, later in itertools.pairwise(times))
    assert all("blocks" in r.json and r.json["text"] for r in receiver.received)


@pytest.mark.parametrize(
    ("code", "body"), [(400, "invalid_payload"), (404, "channel_not_found"), (410, "channel_is_archived")]
)
def test_slacks_permanent_errors_make_the_alert_dead_with_slacks_reason(store, detector, code, body):
    with Receiver() as receiver:
        receiver.answer(status(code, body))
        demo(store, detector, SlackNotifier("slack", receiver.url, min_interval=0)).deliver_all()
    assert store.db.execute("SELECT status, last_error FROM alerts ORDER BY id LIMIT 1").fetchone() == (
        "dead",
        f"Slack refused (HTTP {code}: {body})",
    )


# -- apprise --------------------------------------------------------------------------------------------


def json_url(receiver: Receiver) -> str:
    """Apprise's json:// target: the title and body POSTed as JSON to the receiver."""
    return receiver.url.replace("http://", "json://")


def test_apprise_delivers_to_any_apprise_url_and_a_failure_is_retried(store, detector):
    with Receiver() as receiver:
        receiver.answer(status(500))
        pipeline = demo(store, detector, AppriseNotifier("apprise", json_url(receiver)))
        assert pipeline.deliver_all()["apprise"].failed == 1
        make_due(store)
        pipeline.deliver_all()
    assert store.alert_counts() == {"sent": store.counts()["alerts"]}
    bodies = [r.json for r in receiver.accepted()]
    assert bodies[0]["title"] == "Challenge · severity 4/5"
    assert "I'm up for a **cage match** if he is lol" in bodies[0]["message"]


MASS_MENTIONS = "@everyone @here <@80351110224678912> <@&41771983423143936> <!channel> @room cage match"


def still_pings(text: str) -> list[str]:
    """The mention tokens of Discord, Slack, Matrix and Apprise's Discord ping detection left in `text`."""
    return re.findall(r"@(?:everyone|here|room|\d+)\b|<[@!#]", text)


def test_mass_mentions_in_a_post_reach_apprise_targets_broken(store, detector, write_feed):
    feed = write_feed([post_record("1", MASS_MENTIONS)])
    with Receiver() as receiver:
        pipeline = Pipeline(
            store, detector, {"f": ReplaySource("f", feed)}, [AppriseNotifier("apprise", json_url(receiver))]
        )
        pipeline.poll("f", feed.name)
        pipeline.deliver_all()
    (sent,) = [r.json for r in receiver.accepted()]
    assert "**cage match**" in sent["message"] and "@\u200beveryone @\u200bhere \\<\u200b@" in sent["message"]
    assert still_pings(sent["message"]) == [] and still_pings(sent["title"]) == []


def test_apprise_shows_a_posts_markdown_as_text_and_leaves_links_and_addresses_whole():
    text = "cage match? [verify your account](https://evil.example/login) *now* mail me@example.com"
    text += " or see https://www.threads.net/@zuck"
    _, body = apprise_message(slack_alert(text, [[0, 10, "cage match"]]))
    assert "**cage match**?" in body
    assert "\\[verify your account\\]\\(https://evil.example/login\\) \\*now\\*" in body
    assert "me@example.com" in body and "https://www.threads.net/@zuck" in body


@pytest.mark.parametrize("options", ["", "?format=markdown"])
def test_discord_through_apprise_gets_no_mention_it_would_ping(store, detector, write_feed, options):
    feed = write_feed([post_record("1", MASS_MENTIONS)])
    with responses.RequestsMock() as discord:
        discord.post(re.compile(r"https://discord\.com/api/webhooks/.*"), status=204)
        channel = AppriseNotifier("discord", "discord://1234567890/abcdefghijklmnopqrstuvwxyz" + options)
        pipeline = Pipeline(store, detector, {"f": ReplaySource("f", feed)}, [channel])
        pipeline.poll("f", feed.name)
        assert pipeline.deliver_all()["discord"].sent == 1
        (call,) = discord.calls
    sent = json.loads(call.request.body)
    assert "cage match" in json.dumps(sent, ensure_ascii=False)
    assert still_pings(json.dumps(sent, ensure_ascii=False)) == [] and "allow_mentions" not in sent


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://x.com/a) [open](https://evil.example"])
def test_apprise_shows_a_post_url_only_when_it_is_a_plain_http_link(url):
    alert = slack_alert("cage match", [[0, 10, "cage match"]])
    alert.payload["post"]["url"] = url
    _, body = apprise_message(alert)
    assert body.endswith("rule `cage-fight`") and "evil" not in body and "javascript" not in body


def test_an_apprise_url_apprise_does_not_know_is_a_config_error():
    from config import ConfigError

    with pytest.raises(ConfigError, match="not one Apprise knows"):
        AppriseNotifier("apprise", "nosuchscheme://whatever")


# -- noise control --------------------------------------------------------------------------------------


def test_the_same_rule_and_author_within_the_throttle_window_fold_into_the_first_alert(
    store, detector, write_feed
):
    feed = write_feed(
        [
            {
                "platform": "x",
                "id": str(i),
                "author": "elonmusk",
                "text": f"cage match #{i}",
                "created_at": f"2023-06-21T0{i}:00:00Z",
            }
            for i in range(1, 4)
        ]
    )
    with Receiver() as receiver:
        pipeline = Pipeline(
            store,
            detector,
            {"f": ReplaySource("f", feed)},
            [webhook(receiver)],
            delivery=Delivery(throttle=600),
        )
        pipeline.poll("f", feed.name)
        pipeline.deliver_all()
    (only,) = receiver.received
    assert only.json["folded"] == 2 and only.json["post"]["id"] == "1"
    assert store.counts() == {"posts": 3, "hits": 3, "alerts": 1}


def test_a_digest_channel_sends_one_message_once_the_oldest_alert_has_waited(store, detector):
    with Receiver() as receiver:
        pipeline = demo(store, detector, webhook(receiver), digests={"hook": 3600})
        pipeline.deliver_all()
        assert receiver.received == []
        store.db.execute("UPDATE alerts SET created_at = ?", [iso(utcnow() - timedelta(hours=2))])
        receiver.answer(status(500))
        pipeline.deliver_all()
        make_due(store)
        pipeline.deliver_all()
    failed, sent = receiver.received
    assert sent.json["type"] == "digest" and len(sent.json["alerts"]) == store.counts()["alerts"]
    assert failed.body == sent.body and keys_of([failed]) == keys_of([sent])
    jsonschema.validate(sent.json, SCHEMA)
    assert store.alert_counts() == {"sent": store.counts()["alerts"]}


def test_a_muted_rule_is_stored_but_not_sent_until_unmuted(store, detector):
    store.mute(utcnow() + timedelta(hours=2), rule_id="cage-fight")
    with Receiver() as receiver:
        demo(store, detector, webhook(receiver)).deliver_all()
    sent_rules = {r.json["rule"]["id"] for r in receiver.received}
    assert "cage-fight" not in sent_rules and sent_rules
    assert store.db.execute("SELECT count(*) FROM alerts WHERE status = 'muted'").fetchone()[0] == 4
    assert store.mutes()[0][:2] == ("rule", "cage-fight")
    assert store.unmute(rule_id="cage-fight") == 1 and store.mutes() == []


def test_dead_alerts_can_be_requeued(store, detector):
    with Receiver() as receiver:
        receiver.answer(status(404))
        pipeline = demo(store, detector, webhook(receiver))
        pipeline.deliver_all()
        assert store.retry_dead() == 1
        pipeline.deliver_all()
    assert store.alert_counts() == {"sent": store.counts()["alerts"]}


def test_courier_runs_one_delivery_per_channel_at_a_time(store, detector):
    with Receiver() as receiver:
        hook = webhook(receiver)
        courier = Courier(store, [hook], FAST)
        lock = courier._locks["hook"]
        lock.acquire()
        try:
            assert courier.deliver(hook).sent == 0
        finally:
            lock.release()


def test_the_webhook_schema_file_ships_with_the_package():
    assert (Path(__file__).resolve().parent.parent / "config" / "webhook.schema.json").is_file()


# -- when the database fails after a send -------------------------------------------------------------


class LockedAfterSend:
    """The real webhook channel, after whose every send a second connection takes the database's write
    lock: what a full disk or another writer looks like to the "mark sent" step that follows."""

    def __init__(self, channel: WebhookNotifier, database: Path) -> None:
        self.channel = channel
        self.name = channel.name
        self.min_interval = 0.0
        self.holder = sqlite3.connect(database, isolation_level=None)

    def send(self, alert: Alert) -> None:
        self.channel.send(alert)
        self.holder.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self.holder.in_transaction:
            self.holder.execute("ROLLBACK")


def test_an_alert_whose_mark_sent_fails_is_resent_only_after_a_backoff_and_a_bounded_number_of_times(
    store, detector, tmp_path
):
    store.db.execute("PRAGMA busy_timeout = 50")  # fail the locked write at once rather than in 10 s
    with Receiver() as receiver:
        channel = LockedAfterSend(webhook(receiver), tmp_path / "ringside.db")
        pipeline = demo(store, detector, channel, delivery=Delivery(max_attempts=4, retry_base=60))
        for _tick in range(10):
            pipeline.deliver_all()
            channel.release()
        assert (
            len(receiver.received) == 1
        )  # the attempt was counted before the send: it now waits its backoff
        (head, *_) = store.pending_alerts("hook")
        assert head.attempts == 1 and head.next_attempt_at > utcnow() + timedelta(seconds=25)
        for _tick in range(10):
            make_due(store)
            pipeline.deliver_all()
            channel.release()
        channel.holder.close()
    sends = Counter(keys_of(receiver.received))
    assert sends[keys_of(receiver.received)[0]] == 4 == max(sends.values())  # 4: max_attempts
    assert store.db.execute("SELECT status, attempts FROM alerts ORDER BY id LIMIT 1").fetchone() == (
        "dead",
        4,
    )


# -- a channel that refuses everything ------------------------------------------------------------------


def test_a_channel_refusing_every_alert_is_paused_with_one_notice_through_the_others_and_keeps_its_alerts(
    store, detector, caplog
):
    out = io.StringIO()
    with Receiver(default=status(404, "no_service")) as receiver:
        pipeline = demo(
            store, detector, webhook(receiver), ConsoleNotifier("console", stream=out, color=False)
        )
        with caplog.at_level(logging.ERROR):
            first = pipeline.deliver_all()
            again = pipeline.deliver_all()
        assert (
            len(receiver.received) == REFUSALS_TO_PAUSE
        )  # then it stopped trying, instead of killing them all
        assert first["hook"].dead == again["hook"].dead == 0
        kept = store.db.execute("SELECT status, count(*) FROM alerts WHERE channel = 'hook' GROUP BY 1")
        assert kept.fetchall() == [("pending", store.counts()["alerts"] // 2)]
        assert list(store.paused_channels()) == ["hook"]
        assert out.getvalue().count("channel hook refuses every alert") == 1
        assert "⚠️ CHANNEL PAUSED · channel:hook" in out.getvalue()
        assert "alerts resume --channel hook" in out.getvalue() and receiver.url not in out.getvalue()
        assert [r.getMessage() for r in caplog.records if "paused" in r.getMessage()] == [
            f"hook: paused after {REFUSALS_TO_PAUSE} alerts in a row were refused (last: refused "
            f"(HTTP 404: no_service)); its {store.counts()['alerts'] // 2} pending alert(s) are kept: "
            "fix it, then run_bot.py alerts resume --channel hook"
        ]
        receiver.default = status(200)
        assert store.resume_channel("hook") == store.counts()["alerts"] // 2
        pipeline.deliver_all()
    assert store.paused_channels() == {}
    assert len(receiver.accepted()) == store.counts()["alerts"] // 2
    assert store.db.execute("SELECT count(*) FROM alerts WHERE status != 'sent'").fetchone() == (0,)


def test_a_few_refused_alerts_among_accepted_ones_are_dead_and_the_channel_goes_on(store, detector):
    with Receiver() as receiver:
        receiver.answer(status(400, "invalid_payload"), status(200), status(400, "invalid_payload"))
        result = demo(store, detector, webhook(receiver)).deliver_all()["hook"]
    assert result.dead == 2 and result.sent == store.counts()["alerts"] - 2
    assert store.paused_channels() == {}


def test_a_channel_pause_is_titled_as_one_on_every_chat_channel():
    from bot.delivery import channel_paused_notice

    notice = channel_paused_notice("hook", "refused (HTTP 404)", 5, "run_bot.py alerts resume --channel hook")
    alert = Alert(1, "slack", notice["key"], notice, 0, utcnow(), utcnow())
    assert slack_message(alert)["blocks"][0]["text"]["text"] == "⚠️ Channel paused"
    assert apprise_message(alert)[0] == "Channel paused"


def test_refusals_count_across_runs_so_cron_once_runs_of_one_alert_each_pause_the_channel(
    store, detector, write_feed
):
    with Receiver(default=status(404, "no_service")) as receiver:
        for number in range(1, 6):  # five `once` runs, each its own process and courier, one new alert each
            feed = write_feed([post_record(str(number), f"cage match #{number}", author=f"f{number}")])
            pipeline = Pipeline(
                store, detector, {"f": ReplaySource("f", feed)}, [webhook(receiver)], delivery=FAST
            )
            pipeline.poll("f", feed.name)
            pipeline.deliver_all()
        assert len(receiver.received) == REFUSALS_TO_PAUSE  # the third refusal paused it; no more were sent
    assert list(store.paused_channels()) == ["hook"]
    statuses = store.db.execute("SELECT status, count(*) FROM alerts GROUP BY status").fetchall()
    assert statuses == [("pending", 5)]  # the refused ones too: nothing dead, nothing lost
