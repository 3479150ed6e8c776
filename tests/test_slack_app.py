"""The Slack app channel: slack_sdk's real WebClient against a local Slack Web API, exchanges in threads, and
the buttons through Bolt's dispatch with a recorded block_actions payload, writing to a real database."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlite_utils
import yaml
from slack_bolt import BoltRequest

from bot.app import build_pipeline
from bot.delivery import REFUSALS_TO_PAUSE
from bot.notifiers import DeliveryError
from bot.notifiers.slack_app import SlackAppNotifier, web_client
from bot.notifiers.slack_buttons import Listener, button_app
from bot.pipeline import Pipeline
from bot.service import Service
from bot.sources.replay import ReplaySource
from bot.timeutil import utcnow
from bot.watchdog import notice
from bot.watches import Finding, watch_payload
from config import ConfigError, load_settings
from config.settings import Delivery, Exchanges
from config.watches import Watch
from storage import SCHEMA_VERSION, Store
from storage.schema import MIGRATIONS, migrate
from tests.conftest import DEMO_FEED, ROOT, replay_config
from tests.slack_api import CHANNEL_ID, RATE_LIMITED, Reply, SlackApi, SocketMode, error
from tests.test_exchanges import CHALLENGE, PEOPLE, post
from tests.test_pipeline import RecordingChannel
from tests.test_service import wait_for

PAYLOAD = json.loads((ROOT / "tests" / "data" / "slack" / "block_actions.json").read_text())
FAST = Delivery(max_attempts=8, max_age=3600, retry_base=0.01, retry_max=0.05)
TOKENS = {"SLACK_BOT_TOKEN": "xoxb-test-bot-token-1234", "SLACK_APP_TOKEN": "xapp-test-app-token-5678"}
FOUR_TURNS = [
    CHALLENGE,
    post("Ct1", "zuck", "Send Me Location", "2023-06-21T18:20:00Z", platform="instagram"),
    post("106", "elonmusk", "Vegas Octagon", "2023-06-21T21:15:00Z"),
    post(
        "Ct2", "zuck", "I'm up for a cage match, name the day", "2023-06-22T08:00:00Z", platform="instagram"
    ),
]


@pytest.fixture
def api():
    with SlackApi() as running:
        yield running


def slack_app(store: Store, api: SlackApi, name: str = "slack-app") -> SlackAppNotifier:
    return SlackAppNotifier(
        name, store, web_client(TOKENS["SLACK_BOT_TOKEN"], api.base_url, 5), "#ringside", 0
    )


def polled(store: Store, detector, notifier: SlackAppNotifier, feed: Path = DEMO_FEED, **kwargs) -> Pipeline:
    pipeline = Pipeline(store, detector, {"f": ReplaySource("f", feed)}, [notifier], delivery=FAST, **kwargs)
    pipeline.poll("f", feed.name)
    return pipeline


def make_due(store: Store) -> None:
    store.db.execute("UPDATE alerts SET next_attempt_at = ?", ["2000-01-01T00:00:00.000+00:00"])


def buttons(blocks: list[dict]) -> list[str]:
    return [e["text"]["text"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def press(app, action: str, alert_key: str, ts: str, user: str = "W111") -> None:
    """Dispatch the recorded block_actions payload as if `user` pressed `action` on the message at `ts`."""
    body = copy.deepcopy(PAYLOAD)
    body["actions"][0].update(action_id=f"ringside_{action}", value=alert_key)
    body["container"].update(channel_id=CHANNEL_ID, message_ts=ts)
    body["user"]["id"] = user
    response = app.dispatch(BoltRequest(body=body, mode="socket_mode"))  # as Socket Mode hands it over
    assert response.status == 200


def sent_alert(store: Store, channel: str = "slack-app"):
    row = store.db.execute(
        "SELECT a.id, a.key, m.ts FROM alerts a JOIN slack_messages m ON m.alert_id = a.id "
        "WHERE a.channel = ? AND a.rule_id IS NOT NULL ORDER BY a.id LIMIT 1",
        [channel],
    ).fetchone()
    return store.alert_by_id(row[0]), row[2]


# -- posting ----------------------------------------------------------------------------------------------


def test_each_alert_is_posted_with_its_three_buttons_and_its_ts_is_recorded(store, detector, api):
    polled(store, detector, slack_app(store, api)).deliver_all()
    posts = api.calls_to("chat.postMessage")
    alerts = store.db.execute("SELECT id, key FROM alerts WHERE status = 'sent' ORDER BY id").fetchall()
    assert len(posts) == len(alerts) >= 2
    first = posts[0].arguments
    assert first["channel"] == "#ringside" and "thread_ts" not in first
    assert buttons(first["blocks"]) == ["Not a challenge", "Mute this rule 24 h", "Acknowledge"]
    assert {e["value"] for b in first["blocks"] if b["type"] == "actions" for e in b["elements"]} == {
        alerts[0][1]
    }
    assert posts[0].authorization == "Bearer " + TOKENS["SLACK_BOT_TOKEN"]
    assert store.slack_message(alerts[0][0]).channel_id == CHANNEL_ID


def test_an_alert_posted_just_before_a_crash_is_not_posted_again(store, detector, api):
    notifier = slack_app(store, api)
    pipeline = polled(store, detector, notifier)
    first = store.pending_alerts("slack-app", limit=1)[0]
    notifier.send(first)  # Slack took it; the process dies before marking it sent
    assert store.pending_alerts("slack-app", limit=1)[0].id == first.id
    pipeline.deliver_all()
    assert sum(first.key in json.dumps(c.arguments) for c in api.calls_to("chat.postMessage")) == 1
    assert store.db.execute("SELECT status FROM alerts WHERE id = ?", [first.id]).fetchone()[0] == "sent"


def test_a_429_waits_for_slacks_retry_after_and_slack_sdk_does_not_retry_on_its_own(store, detector, api):
    notifier = slack_app(store, api)
    api.answer(RATE_LIMITED)
    with pytest.raises(DeliveryError) as raised:
        notifier.send(polled(store, detector, notifier).store.pending_alerts("slack-app", limit=1)[0])
    assert raised.value.retry and raised.value.retry_after == 30.0
    assert len(api.calls_to("chat.postMessage")) == 1


def test_a_rate_limited_alert_is_retried_no_sooner_than_retry_after(store, detector, api):
    api.answer(RATE_LIMITED)
    pipeline = polled(store, detector, slack_app(store, api))
    pipeline.courier.delivery = Delivery(retry_base=0.01, retry_max=3600)  # caps Retry-After no lower
    pipeline.deliver_all()
    waits = store.db.execute(
        "SELECT (julianday(next_attempt_at) - julianday(created_at)) * 86400, last_error FROM alerts "
        "WHERE attempts = 1 AND status = 'pending'"
    ).fetchone()
    assert waits[0] >= 29 and "ratelimited" in waits[1]


@pytest.mark.parametrize("code", ["invalid_auth", "not_in_channel", "channel_not_found"])
def test_a_token_or_channel_slack_refuses_pauses_the_channel_keeping_its_alerts(store, detector, api, code):
    api.answer(*[error(code)] * REFUSALS_TO_PAUSE)
    pipeline = polled(store, detector, slack_app(store, api))
    pending = store.due_count("slack-app")
    pipeline.deliver_all()
    assert "slack-app" in store.paused_channels()
    assert code in store.paused_channels()["slack-app"]
    assert store.db.execute("SELECT count(*) FROM alerts WHERE status = 'pending'").fetchone()[0] == pending
    assert TOKENS["SLACK_BOT_TOKEN"] not in json.dumps(store.paused_channels())


def test_a_watchdog_notice_is_posted_without_buttons(store, api):
    store.queue_notice(["slack-app"], notice("failing", "x", "elonmusk", utcnow(), "HTTP 503"))
    Pipeline(store, None, {}, [slack_app(store, api)], delivery=FAST).deliver_all()
    (posted,) = api.calls_to("chat.postMessage")
    assert (
        "x:elonmusk failing since" in posted.arguments["text"] and buttons(posted.arguments["blocks"]) == []
    )


def test_a_watch_alert_has_no_not_a_challenge_button_as_it_is_about_no_one_post(store, api):
    now = utcnow()
    finding = Finding("Elon Musk has not posted for 3 days", now, now, {"days": 3})
    payload = watch_payload(Watch("musk-quiet", "silence", days=3), finding, now, 1, Exchanges())
    store.queue_watch_alert(["slack-app"], payload, now)
    Pipeline(store, None, {}, [slack_app(store, api)], delivery=FAST).deliver_all()
    (posted,) = api.calls_to("chat.postMessage")
    assert buttons(posted.arguments["blocks"]) == ["Mute this rule 24 h", "Acknowledge"]


# -- threads ----------------------------------------------------------------------------------------------


def test_a_four_turn_exchange_is_one_parent_with_two_replies_and_the_parent_follows_each_turn(
    store, detector, api, write_feed
):
    notifier = slack_app(store, api)
    polled(store, detector, notifier, write_feed(FOUR_TURNS), exchanges=PEOPLE).deliver_all()
    exchange_posts = [
        c.arguments
        for c in api.calls_to("chat.postMessage")
        if "🔥" in json.dumps(c.arguments, ensure_ascii=False) or "thread_ts" in c.arguments
    ]
    parent, *replies = exchange_posts
    assert "thread_ts" not in parent and len(replies) == 2
    parent_ts = store.slack_thread("slack-app", store.db.execute("SELECT id FROM exchanges").fetchone()[0]).ts
    assert {r["thread_ts"] for r in replies} == {parent_ts}
    assert ["Turn 3" in r["text"] for r in replies] == [True, False]
    assert "Turn 4" in replies[1]["text"]
    updates = [c.arguments for c in api.calls_to("chat.update")]
    assert [u["ts"] for u in updates] == [parent_ts, parent_ts]
    latest = updates[-1]["blocks"][0]["text"]["text"]
    assert "turn 4" in latest and "escalating" in latest
    assert updates[-1]["text"].endswith("Mark Zuckerberg: I'm up for a cage match, name the day")
    assert buttons(updates[-1]["blocks"]) == ["Not a challenge", "Acknowledge"]


def test_a_reply_whose_parent_update_was_rate_limited_is_not_posted_twice(store, detector, api, write_feed):
    notifier = slack_app(store, api)
    pipeline = polled(store, detector, notifier, write_feed(FOUR_TURNS[:3]), exchanges=PEOPLE)
    api.answer(RATE_LIMITED, method="chat.update")
    pipeline.deliver_all()
    make_due(store)
    pipeline.deliver_all()
    replies = [c for c in api.calls_to("chat.postMessage") if "thread_ts" in c.arguments]
    assert len(replies) == 1
    assert len(api.calls_to("chat.update")) == 2  # the rate-limited one, then the one that went through
    assert store.db.execute("SELECT count(*) FROM alerts WHERE status != 'sent'").fetchone()[0] == 0


def test_a_reply_posted_whose_parent_slack_will_not_update_is_sent_not_dead(store, detector, api, write_feed):
    """The turn reached its thread: a parent Slack refuses to update for good is logged, and the turn is not
    counted dead (nor towards pausing the channel)."""
    notifier = slack_app(store, api)
    pipeline = polled(store, detector, notifier, write_feed(FOUR_TURNS[:3]), exchanges=PEOPLE)
    api.answer(error("invalid_blocks"), method="chat.update")
    pipeline.deliver_all()
    replies = [c for c in api.calls_to("chat.postMessage") if "thread_ts" in c.arguments]
    assert len(replies) == 1
    assert store.db.execute("SELECT count(*) FROM alerts WHERE status != 'sent'").fetchone()[0] == 0


# -- buttons ----------------------------------------------------------------------------------------------


def test_not_a_challenge_stores_the_label_train_reads_and_replaces_the_button(store, detector, api):
    notifier = slack_app(store, api)
    polled(store, detector, notifier).deliver_all()
    alert, ts = sent_alert(store)
    press(button_app(notifier, verify_token=False, synchronous=True), "not_a_challenge", alert.key, ts)
    verdict = store.verdicts()[-1]
    assert (verdict.post_key, verdict.label, verdict.category, verdict.source) == (
        alert.payload["post"]["key"],
        "none",
        "none",
        "slack",
    )
    update = api.calls_to("chat.update")[-1].arguments
    assert (update["channel"], update["ts"]) == (CHANNEL_ID, ts)
    assert buttons(update["blocks"]) == ["Mute this rule 24 h", "Acknowledge"]
    assert "Marked not a challenge by <@W111>" in json.dumps(update["blocks"], ensure_ascii=False)


def test_mute_this_rule_mutes_it_for_24_hours_and_says_who_did(store, detector, api):
    notifier = slack_app(store, api)
    polled(store, detector, notifier).deliver_all()
    alert, ts = sent_alert(store)
    press(
        button_app(notifier, verify_token=False, synchronous=True), "mute_rule", alert.key, ts, user="U0ALICE"
    )
    ((kind, name, until),) = store.mutes()
    assert (kind, name) == ("rule", alert.payload["rule"]["id"])
    assert 23.9 < (until - utcnow()).total_seconds() / 3600 <= 24
    update = api.calls_to("chat.update")[-1].arguments
    assert buttons(update["blocks"]) == ["Not a challenge", "Acknowledge"]
    assert "muted for 24 h by <@U0ALICE>" in json.dumps(update["blocks"], ensure_ascii=False)


def test_acknowledge_records_who_and_when_and_a_second_press_keeps_the_first(store, detector, api):
    notifier = slack_app(store, api)
    polled(store, detector, notifier).deliver_all()
    alert, ts = sent_alert(store)
    app = button_app(notifier, verify_token=False, synchronous=True)
    press(app, "acknowledge", alert.key, ts, user="U0ALICE")
    press(app, "acknowledge", alert.key, ts, user="U0BOB")
    (done,) = store.alert_actions(alert.id)
    assert (done.action, done.user_id, done.user_name) == ("acknowledge", "U0ALICE", "primary-owner")
    update = api.calls_to("chat.update")[-1].arguments
    assert buttons(update["blocks"]) == ["Not a challenge", "Mute this rule 24 h"]
    assert "Acknowledged by <@U0ALICE>" in json.dumps(update["blocks"], ensure_ascii=False)
    report = store.report("alerts")
    row = dict(zip(report.columns, next(r for r in report.rows if r[0] == "slack-app"), strict=True))
    assert row["acknowledged"] == 1


def test_a_press_reaching_another_channel_of_the_same_app_acts_on_the_alert_of_the_message_pressed(
    store, detector, api
):
    alerts_channel, ops_channel = slack_app(store, api, "alerts"), slack_app(store, api, "ops")
    channels = [alerts_channel, ops_channel]
    pipeline = Pipeline(store, detector, {"f": ReplaySource("f", DEMO_FEED)}, channels, delivery=FAST)
    pipeline.poll("f", DEMO_FEED.name)
    pipeline.deliver_all()
    ops_alert, ops_ts = sent_alert(store, "ops")
    alerts_alert, _ = sent_alert(store, "alerts")
    assert ops_alert.key == alerts_alert.key  # one key in every channel
    press(
        button_app(alerts_channel, verify_token=False, synchronous=True), "acknowledge", ops_alert.key, ops_ts
    )
    assert [a.action for a in store.alert_actions(ops_alert.id)] == ["acknowledge"]
    assert store.alert_actions(alerts_alert.id) == []
    assert api.calls_to("chat.update")[-1].arguments["ts"] == ops_ts


def test_not_a_challenge_on_an_exchanges_parent_labels_the_challenge_that_opened_it(
    store, detector, api, write_feed
):
    notifier = slack_app(store, api)
    polled(store, detector, notifier, write_feed(FOUR_TURNS[:3]), exchanges=PEOPLE).deliver_all()
    thread = store.slack_thread("slack-app", store.db.execute("SELECT id FROM exchanges").fetchone()[0])
    parent = store.alert_by_id(thread.parent_alert_id)
    press(
        button_app(notifier, verify_token=False, synchronous=True), "not_a_challenge", parent.key, thread.ts
    )
    assert [(v.post_key, v.label) for v in store.verdicts()] == [("x:100", "none")]
    update = api.calls_to("chat.update")[-1].arguments
    assert update["ts"] == thread.ts and "turn 3" in update["blocks"][0]["text"]["text"]


def test_a_press_on_an_alert_this_database_does_not_have_writes_nothing(store, detector, api, caplog):
    notifier = slack_app(store, api)
    polled(store, detector, notifier).deliver_all()
    with caplog.at_level(logging.WARNING, logger="ringside.slack_app"):
        press(button_app(notifier, verify_token=False, synchronous=True), "acknowledge", "rs1-unknown", "1.2")
    assert store.db.execute("SELECT count(*) FROM alert_actions").fetchone()[0] == 0
    assert "rs1-unknown" in caplog.text and not api.calls_to("chat.update")


def test_a_press_waits_for_a_write_in_flight_and_never_acts_on_what_it_rolled_back(store, detector, api):
    """Button presses run in Bolt's threads on the store's one connection: reading without the store's lock,
    they would see another thread's transaction half done (here a message recorded, then rolled back)."""
    notifier = slack_app(store, api)
    polled(store, detector, notifier)
    alert = store.pending_alerts("slack-app", limit=1)[0]
    writing, undo = threading.Event(), threading.Event()

    def write_then_roll_back() -> None:
        with contextlib.suppress(RuntimeError), store.lock, store.db.atomic():
            store.db.execute(
                "INSERT INTO slack_messages (alert_id, channel_id, ts, posted_at) VALUES (?, ?, '9.9', '')",
                [alert.id, CHANNEL_ID],
            )
            writing.set()
            undo.wait(5)
            raise RuntimeError("the write failed")

    writer = threading.Thread(target=write_then_roll_back)
    writer.start()
    assert writing.wait(5)
    seen: list = []
    reader = threading.Thread(
        target=lambda: seen.extend([store.alert_at(CHANNEL_ID, "9.9"), store.slack_message(alert.id)])
    )
    reader.start()
    reader.join(0.3)
    undo.set()
    writer.join(5)
    reader.join(5)
    assert seen == [None, None]


def test_socket_mode_that_cannot_open_is_logged_and_stops_at_shutdown(store, api, caplog):
    api.answer(error("invalid_auth"), method="apps.connections.open")
    notifier = slack_app(store, api)
    with caplog.at_level(logging.ERROR, logger="ringside.slack_app"):
        listener = Listener(notifier, TOKENS["SLACK_APP_TOKEN"]).start()
        for _ in range(600):  # the first try runs in its own thread; wait for it to reach Slack
            if api.calls_to("apps.connections.open"):
                break
            listener.thread.join(0.05)
        listener.close()
    assert not listener.thread.is_alive()
    assert "cannot open Socket Mode" in caplog.text and "invalid_auth" in caplog.text
    assert TOKENS["SLACK_APP_TOKEN"] not in caplog.text


def test_the_service_opens_socket_mode_for_the_buttons_when_it_starts_and_closes_it_when_it_stops(
    tmp_path, api, caplog
):
    api.answer(error("invalid_auth"), method="apps.connections.open")  # as far as a test gets without network
    config = tmp_path / "ringside.toml"
    config.write_text(slack_app_config(tmp_path, api.base_url), encoding="utf-8")
    settings = load_settings(config, environ=TOKENS)
    with Store.open(settings.database) as store:
        service = Service(settings, build_pipeline(settings, store))
        notifier = next(n for n in service.pipeline.notifiers if isinstance(n, SlackAppNotifier))
        stop = threading.Event()
        runner = threading.Thread(target=service.run_until, args=[stop])
        with caplog.at_level(logging.ERROR, logger="ringside.slack_app"):
            runner.start()
            try:
                assert wait_for(lambda: api.calls_to("apps.connections.open"))
                listener = notifier.listener
            finally:
                stop.set()
                runner.join(20)
    assert not runner.is_alive() and not listener.thread.is_alive() and notifier.listener is None
    assert api.calls_to("apps.connections.open")[0].authorization == "Bearer " + TOKENS["SLACK_APP_TOKEN"]
    assert "cannot open Socket Mode" in caplog.text


def test_a_press_over_socket_mode_reaches_the_running_service_and_is_acknowledged_to_slack(tmp_path, api):
    config = tmp_path / "ringside.toml"
    config.write_text(slack_app_config(tmp_path, api.base_url), encoding="utf-8")
    settings = load_settings(config, environ=TOKENS)
    with SocketMode() as slack, Store.open(settings.database) as store:
        api.answer(Reply(body={"ok": True, "url": slack.url}), method="apps.connections.open")
        service = Service(settings, build_pipeline(settings, store))
        stop = threading.Event()
        runner = threading.Thread(target=service.run_until, args=[stop])
        runner.start()
        try:
            assert wait_for(lambda: store.db.execute("SELECT count(*) FROM slack_messages").fetchone()[0] > 0)
            assert wait_for(slack.connected.is_set)
            alert, ts = sent_alert(store)
            body = copy.deepcopy(PAYLOAD)
            body["actions"][0].update(action_id="ringside_acknowledge", value=alert.key)
            body["container"].update(channel_id=CHANNEL_ID, message_ts=ts)
            slack.deliver(body)
            assert wait_for(lambda: store.alert_actions(alert.id) != [])
            assert store.alert_actions(alert.id)[0].user_id == "W111"
            assert wait_for(lambda: any(c.arguments.get("ts") == ts for c in api.calls_to("chat.update")))
        finally:
            stop.set()
            runner.join(20)
    assert not runner.is_alive()
    assert {"envelope_id": "env-1"} in slack.acks


# -- config and schema ------------------------------------------------------------------------------------


def slack_app_config(tmp_path: Path, api_url: str, extra: str = "") -> str:
    """The demo replayed to the console (channels[0]) and a Slack app (channels[1])."""
    return replay_config(
        DEMO_FEED,
        tmp_path / "ringside.db",
        f"""
[[channels]]
type = "slack_app"
name = "slack-app"
channel = "#ringside"
api_url = "{api_url}"
min_interval = "0s"
{extra}
""",
    )


def test_the_readme_config_loads_with_its_tokens_from_the_environment(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    example = readme.split("<!-- slack-app-config -->")[1].split("```toml")[1].split("```")[0]
    path = tmp_path / "ringside.toml"
    path.write_text(replay_config(DEMO_FEED, tmp_path / "ringside.db") + example, encoding="utf-8")
    channel = load_settings(path, environ=TOKENS).channels[-1]
    assert channel.type == "slack_app" and channel.secrets["bot"].reveal() == TOKENS["SLACK_BOT_TOKEN"]
    assert TOKENS["SLACK_BOT_TOKEN"] not in json.dumps(load_settings(path, environ=TOKENS).masked())


@pytest.mark.parametrize(
    ("extra", "environ", "message"),
    [
        (
            "",
            {"SLACK_APP_TOKEN": TOKENS["SLACK_APP_TOKEN"]},
            "bot_token_env: the environment variable SLACK_BOT",
        ),
        (
            "",
            {**TOKENS, "SLACK_BOT_TOKEN": "xapp-1"},
            "bot_token_env: $SLACK_BOT_TOKEN does not start with xoxb-",
        ),
        ('digest = "5m"', TOKENS, "digest: a slack_app channel sends each alert on its own"),
    ],
)
def test_a_slack_app_channel_with_a_missing_or_wrong_token_is_one_clear_error(
    tmp_path, extra, environ, message
):
    path = tmp_path / "ringside.toml"
    path.write_text(slack_app_config(tmp_path, "https://slack.com/api/", extra), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(path, environ=environ)
    assert message in str(raised.value) and "channels[1]" in str(raised.value)
    assert "xapp-1" not in str(raised.value)


def test_a_channel_that_is_neither_an_id_nor_a_name_is_refused(tmp_path):
    path = tmp_path / "ringside.toml"
    path.write_text(slack_app_config(tmp_path, "https://slack.com/api/").replace("#ringside", "<!here>"))
    with pytest.raises(ConfigError, match=r"channels\[1\]\.channel: expected a channel id such as C0123ABCD"):
        load_settings(path, environ=TOKENS)


def test_run_bot_once_posts_the_demo_to_the_slack_app_and_records_each_message(tmp_path, api):
    config = tmp_path / "ringside.toml"
    config.write_text(slack_app_config(tmp_path, api.base_url), encoding="utf-8")
    env = {**os.environ, **TOKENS, "RINGSIDE_CONFIG": str(config)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_bot.py"), "once"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    with Store.open(tmp_path / "ringside.db", readonly=True) as store:
        messages = store.db.execute("SELECT count(*) FROM slack_messages").fetchone()[0]
        sent = store.db.execute("SELECT count(*) FROM alerts WHERE status = 'sent' AND channel = 'slack-app'")
        sent = sent.fetchone()[0]
    assert messages == sent == len(api.calls_to("chat.postMessage")) >= 2
    assert TOKENS["SLACK_BOT_TOKEN"] not in result.stderr + result.stdout


def test_the_shipped_manifest_asks_for_chat_write_and_turns_on_socket_mode_and_interactivity():
    manifest = yaml.safe_load((ROOT / "config" / "slack-app-manifest.yml").read_text(encoding="utf-8"))
    assert manifest["oauth_config"]["scopes"]["bot"] == ["chat:write"]
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_a_database_of_the_previous_schema_upgrades_keeping_everything_it_had(tmp_path, detector):
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(sqlite3.connect(path))
    migrate(old, MIGRATIONS[:-1])  # the schema before the Slack app's tables
    channels = [RecordingChannel("slack-app")]
    pipeline = Pipeline(Store(old), detector, {"f": ReplaySource("f", DEMO_FEED)}, channels, delivery=FAST)
    pipeline.poll("f", DEMO_FEED.name)
    before = Store(old).counts()
    old.close()
    with Store.open(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.counts() == before and before["posts"] > 0 and before["alerts"] > 0
        assert store.db.execute("SELECT count(*) FROM slack_messages").fetchone()[0] == 0
