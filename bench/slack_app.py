"""The Slack app channel's own cost: N alerts posted through slack_sdk's WebClient to a local stand-in for
Slack's Web API (each message's ts recorded before the alert is marked sent), then a button pressed on each
through Bolt's dispatch (a label written, the message updated).

    .venv/bin/python bench/slack_app.py [--alerts 500]

Slack itself takes about one message a second per channel (the channel's min_interval, 0 here), so this is
what Ringside adds per message, not what Slack allows. Prints alerts/s, presses/s and messages per alert.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slack_bolt import BoltRequest

from bench.delivery import write_feed
from bot.detect.detector import Detector
from bot.detect.matcher import Matcher, load_rules
from bot.notifiers.slack_app import SlackAppNotifier, web_client
from bot.notifiers.slack_buttons import button_app
from bot.pipeline import Pipeline
from bot.sources.replay import ReplaySource
from config import DEFAULT_RULES
from config.settings import Delivery
from storage import Store
from tests.slack_api import CHANNEL_ID, SlackApi

PAYLOAD = Path(__file__).resolve().parent.parent / "tests" / "data" / "slack" / "block_actions.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp, SlackApi() as api, Store.open(Path(tmp) / "bench.db") as store:
        feed = Path(tmp) / "feed.jsonl"
        write_feed(feed, args.alerts)
        notifier = SlackAppNotifier(
            "slack-app", store, web_client("xoxb-bench", api.base_url, 10), "#bench", 0
        )
        pipeline = Pipeline(
            store,
            Detector(Matcher(load_rules(DEFAULT_RULES))),
            {"f": ReplaySource("f", feed)},
            [notifier],
            delivery=Delivery(),
        )
        pipeline.poll("f", feed.name)
        started = time.perf_counter()
        sent = pipeline.deliver_all()["slack-app"].sent
        posting = time.perf_counter() - started
        rows = store.db.execute("SELECT a.key, m.ts FROM alerts a JOIN slack_messages m ON m.alert_id = a.id")
        messages = rows.fetchall()
        app = button_app(notifier, verify_token=False, synchronous=True)
        started = time.perf_counter()
        for key, ts in messages:
            body = copy.deepcopy(json.loads(PAYLOAD.read_text()))
            body["actions"][0].update(action_id="ringside_not_a_challenge", value=key)
            body["container"].update(channel_id=CHANNEL_ID, message_ts=ts)
            app.dispatch(BoltRequest(body=body, mode="socket_mode"))
        pressing = time.perf_counter() - started
        labels = len(store.verdicts())
    print(f"alerts posted: {sent} in {posting:.2f}s, {sent / posting:.0f} alerts/s")
    print(f"chat.postMessage calls per alert: {len(api.calls_to('chat.postMessage')) / sent:.2f}")
    print(f"presses handled: {len(messages)} in {pressing:.2f}s, {len(messages) / pressing:.0f} presses/s")
    print(f"labels stored: {labels}; chat.update calls: {len(api.calls_to('chat.update'))}")


if __name__ == "__main__":
    main()
