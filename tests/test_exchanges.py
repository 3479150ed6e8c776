"""Exchange detection: a challenge linked to its answer across accounts and platforms, alerted as one."""

from __future__ import annotations

import io

import jsonschema
import responses

from bot.notifiers.console import ConsoleNotifier
from bot.pipeline import Pipeline
from bot.sources.replay import ReplaySource
from config.settings import Exchanges, Person
from storage import Store
from tests.conftest import DEMO_FEED
from tests.receiver import Receiver
from tests.test_channels import SCHEMA, webhook
from tests.test_pipeline import RecordingChannel

PEOPLE = Exchanges(
    people=(
        Person("musk", "Elon Musk", frozenset({"x:elonmusk"})),
        Person("zuck", "Mark Zuckerberg", frozenset({"instagram:zuck", "threads:zuck", "x:finkd"})),
        Person("bezos", "Jeff Bezos", frozenset({"x:jeffbezos"})),
    ),
    rivalries=(frozenset({"musk", "zuck"}),),
    window=72 * 3600,
)
CHALLENGE = {
    "platform": "x",
    "id": "100",
    "author": "elonmusk",
    "text": "I'm up for a cage match if he is lol",
    "created_at": "2023-06-21T02:58:00Z",
}


def post(id: str, author: str, text: str, at: str, platform: str = "x", **extra) -> dict:
    return {"platform": platform, "id": id, "author": author, "text": text, "created_at": at, **extra}


class Collecting(RecordingChannel):
    def __init__(self) -> None:
        super().__init__("collector")
        self.payloads: list[dict] = []

    def send(self, alert) -> None:
        self.payloads.append(alert.payload)

    def exchanges(self) -> list[dict]:
        return [p for p in self.payloads if p.get("kind") == "exchange"]


def run(store: Store, detector, write_feed, records: list, name: str = "feed.jsonl") -> Collecting:
    channel = Collecting()
    feed = write_feed(records, name=name)
    pipeline = Pipeline(store, detector, {"f": ReplaySource("f", feed)}, [channel], exchanges=PEOPLE)
    pipeline.poll("f", feed.name)
    pipeline.deliver_all()
    return channel


def links(channel: Collecting) -> list[list[str]]:
    return [[t["link"] for t in p["exchange"]["posts"]] for p in channel.exchanges()]


def test_an_answer_on_another_platform_within_the_window_links_by_its_response_phrase(
    store, detector, write_feed
):
    channel = run(
        store,
        detector,
        write_feed,
        [
            CHALLENGE,
            post("Ct1", "zuck", "Send Me Location", "2023-06-21T18:20:00Z", platform="instagram"),
        ],
    )
    (alert,) = channel.exchanges()
    assert alert["turn"] == 2 and alert["follows"] is None
    first, answer = alert["exchange"]["posts"]
    assert (first["name"], first["post"]["text"]) == ("Elon Musk", "I'm up for a cage match if he is lol")
    assert (answer["name"], answer["link"], answer["post"]["platform"]) == (
        "Mark Zuckerberg",
        "response",
        "instagram",
    )
    assert alert["exchange"]["names"] == ["Elon Musk", "Mark Zuckerberg"]
    assert alert["exchange"]["status"] == "open" and alert["exchange"]["severity"] == 5


def test_a_reply_or_a_quote_links_whatever_it_says(store, detector, write_feed):
    channel = run(
        store,
        detector,
        write_feed,
        [
            CHALLENGE,
            post("101", "finkd", "lol ok", "2023-06-21T04:00:00Z", kind="reply", reply_to="100"),
            post("102", "finkd", "sure", "2023-06-21T05:00:00Z", kind="quote", quote_of="100"),
        ],
    )
    assert links(channel) == [["first", "reply"], ["first", "reply", "quote"]]


def test_a_mention_of_the_rival_links_to_the_rivals_latest_challenge(store, detector, write_feed):
    channel = run(
        store,
        detector,
        write_feed,
        [
            CHALLENGE,
            post(
                "103",
                "finkd",
                "@elonmusk we'll see about that",
                "2023-06-22T09:00:00Z",
                mentions=["elonmusk"],
            ),
        ],
    )
    assert links(channel) == [["first", "mention"]]


def test_a_non_rivals_send_me_the_location_links_nothing(store, detector, write_feed):
    channel = run(
        store,
        detector,
        write_feed,
        [
            CHALLENGE,
            post("104", "jeffbezos", "Send me the location", "2023-06-21T05:00:00Z"),
            post("105", "someone", "send me the location of the meetup", "2023-06-21T06:00:00Z"),
        ],
    )
    assert channel.exchanges() == []
    assert store.db.execute("SELECT count(*) FROM exchanges").fetchone() == (0,)


def test_a_rivals_answer_outside_the_window_links_nothing(store, detector, write_feed):
    channel = run(
        store,
        detector,
        write_feed,
        [
            CHALLENGE,
            post("Ct2", "zuck", "Send Me Location", "2023-06-25T18:20:00Z", platform="instagram"),
        ],
    )
    assert channel.exchanges() == []


def test_a_third_turn_escalates_and_follows_the_second(store, detector, write_feed):
    channel = run(
        store,
        detector,
        write_feed,
        [
            CHALLENGE,
            post("Ct1", "zuck", "Send Me Location", "2023-06-21T18:20:00Z", platform="instagram"),
            post("106", "elonmusk", "Vegas Octagon", "2023-06-21T21:15:00Z"),
        ],
    )
    second, third = channel.exchanges()
    assert third["turn"] == 3 and third["thread"] == second["thread"] and third["follows"] == second["key"]
    assert third["exchange"]["status"] == "escalating"
    assert [t["link"] for t in third["exchange"]["posts"]] == ["first", "response", "counter"]


def test_a_restart_in_the_middle_keeps_the_exchange_whole_and_sends_nothing_twice(
    tmp_path, detector, write_feed
):
    records = [
        CHALLENGE,
        post("Ct1", "zuck", "Send Me Location", "2023-06-21T18:20:00Z", platform="instagram"),
        post("106", "elonmusk", "Vegas Octagon", "2023-06-21T21:15:00Z"),
    ]
    first_store = Store.open(tmp_path / "r.db")
    before = run(first_store, detector, write_feed, records[:2], name="part1.jsonl")
    first_store.close()
    second_store = Store.open(tmp_path / "r.db")
    after = run(second_store, detector, write_feed, records, name="part2.jsonl")  # re-reads the first two
    assert [p["turn"] for p in before.exchanges()] == [2]
    assert [p["turn"] for p in after.exchanges()] == [3]
    assert after.exchanges()[0]["exchange"]["status"] == "escalating"
    # Quiet since 2023, longer than cool_after: stored as cooled once the poll is done.
    assert second_store.db.execute("SELECT turns, status FROM exchanges").fetchall() == [(3, "cooled")]
    assert second_store.db.execute("SELECT count(*) FROM exchange_turns").fetchone() == (3,)
    second_store.close()


def test_the_demo_feed_alerts_the_x_challenge_and_the_instagram_answer_as_one_exchange(store, detector):
    out = io.StringIO()
    pipeline = Pipeline(
        store,
        detector,
        {"demo": ReplaySource("demo", DEMO_FEED)},
        [ConsoleNotifier("console", stream=out, color=False)],
        exchanges=PEOPLE,
    )
    pipeline.poll("demo", DEMO_FEED.name)
    pipeline.deliver_all()
    text = out.getvalue()
    assert "🔥 EXCHANGE · TURN 2 · SEVERITY 5/5 · ELON MUSK VS MARK ZUCKERBERG · OPEN" in text
    assert "   1. Elon Musk (@elonmusk on X · 2023-06-21 02:58 UTC)\n" in text
    assert "      I'm up for a **cage match** if he is lol\n   2. Mark Zuckerberg" in text
    assert "   2. Mark Zuckerberg (@zuck on Instagram · 2023-06-21 18:20 UTC) · response\n" in text
    assert "      **Send Me Location**\n" in text


def test_a_webhook_gets_the_exchange_in_the_schema_with_its_thread(store, detector, write_feed):
    with Receiver() as receiver:
        feed = write_feed(
            [CHALLENGE, post("Ct1", "zuck", "Send Me Location", "2023-06-21T18:20:00Z", platform="instagram")]
        )
        pipeline = Pipeline(
            store, detector, {"f": ReplaySource("f", feed)}, [webhook(receiver)], exchanges=PEOPLE
        )
        pipeline.poll("f", feed.name)
        pipeline.deliver_all()
    bodies = [r.json for r in receiver.received]
    for body in bodies:
        jsonschema.validate(body, SCHEMA)
    (exchange,) = [b for b in bodies if b["type"] == "exchange"]
    assert exchange["thread"].startswith("ex-") and exchange["turn"] == 2


def test_the_context_backtest_scores_answers_that_only_the_exchange_makes_flags(write_config, capsys):
    import json

    import run_bot
    from tests.conftest import ROOT

    data = ROOT / "tests" / "data" / "exchanges.jsonl"
    assert run_bot.main(["backtest", str(data), "--context", "--model", "off"]) == 0
    out = capsys.readouterr().out
    assert "Ct1  accept-challenge(response),exchange(response)  **Send Me Location**" in out
    assert out.strip().splitlines()[-1] == "precision=1.000 recall=1.000 f1=1.000 tp=6 fp=0 fn=0 tn=6"
    # Without context, the rules see no flag in an answer with no fight word: the exchange is what catches it.
    assert run_bot.main(["backtest", str(data), "--json", "--model", "off"]) == 0
    scores = json.loads(capsys.readouterr().out)["scores"]
    assert scores["fn"] == 3 and scores["tp"] == 3


def test_an_answer_stored_before_its_challenge_links_when_the_challenge_arrives(store, detector, write_feed):
    answer = post("Ct1", "zuck", "Send Me Location", "2023-06-21T18:20:00Z", platform="instagram")
    reply = post("101", "finkd", "lol ok", "2023-06-21T04:00:00Z", kind="reply", reply_to="100")
    early = run(store, detector, write_feed, [answer, reply], name="zuck.jsonl")  # zuck's feeds polled first
    assert early.exchanges() == []
    late = run(store, detector, write_feed, [CHALLENGE], name="musk.jsonl")
    assert links(late) == [["first", "reply"], ["first", "reply", "response"]]


@responses.activate
def test_a_challenge_on_bluesky_answered_on_mastodon_and_followed_up_on_threads_is_one_exchange(
    store, detector, tmp_path
):
    """Each turn comes through its platform's real source: Bluesky's atproto client against a local XRPC
    server, Mastodon.py and the Threads Graph client against `responses`."""
    from tests import test_bluesky_source as bluesky
    from tests import test_mastodon_source as mastodon
    from tests import test_threads_source as threads

    people = Exchanges(
        people=(
            Person("musk", "Elon Musk", frozenset({"bluesky:alice.bsky.social", "threads:elonmusk"})),
            Person("zuck", "Mark Zuckerberg", frozenset({f"mastodon:{mastodon.ACCOUNT}"})),
        ),
        rivalries=(frozenset({"musk", "zuck"}),),
        window=72 * 3600,
    )
    xrpc = bluesky.Xrpc()
    try:
        xrpc.answer(
            bluesky.FEED,
            bluesky.page(
                bluesky.view("3k1", "I'm up for a cage match if he is lol", "2023-06-21T02:58:00.000Z")
            ),
        )
        responses.get(
            mastodon.STATUSES,
            json=[mastodon.status("9001", "<p>Send Me Location</p>", created_at="2023-06-21T18:20:00.000Z")],
        )
        responses.get(
            threads.MY_THREADS,
            json=threads.page(
                threads.thread("7", "Vegas Octagon", "2023-06-21T21:15:00+0000", username="elonmusk")
            ),
        )
        channel = Collecting()
        sources = {
            "bluesky": bluesky.make_source(xrpc),
            "mastodon": mastodon.make_source(),
            "threads": threads.make_source(tmp_path),
        }
        pipeline = Pipeline(store, detector, sources, [channel], exchanges=people)
        for source, feed in (
            ("bluesky", "alice.bsky.social"),
            ("mastodon", mastodon.ACCOUNT),
            ("threads", "me"),
        ):
            assert pipeline.poll(source, feed) is not None, source
        pipeline.deliver_all()
    finally:
        xrpc.http.shutdown()
        xrpc.http.server_close()
    *_, last = channel.exchanges()
    assert last["turn"] == 3 and last["exchange"]["status"] == "escalating"
    assert [t["post"]["platform"] for t in last["exchange"]["posts"]] == ["bluesky", "mastodon", "threads"]
    assert [t["link"] for t in last["exchange"]["posts"]] == ["first", "response", "counter"]
    assert store.db.execute("SELECT count(*) FROM exchanges").fetchone() == (1,)
