"""The Bluesky source through the real atproto Client, answered by a real XRPC server on 127.0.0.1, and in
Jetstream mode through the real websockets client, fed by a real websockets server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from atproto_client import Client
from atproto_client.request import Request
from websockets.sync.server import serve

from bot.app import build_pipeline
from bot.pipeline import Pipeline
from bot.service import Service
from bot.sources import RateLimited, SourceError, build_source
from bot.sources.bluesky import BlueskySource
from bot.sources.jetstream import JETSTREAM_FEED, JetstreamSource
from bot.timeutil import iso, utcnow
from config import ConfigError, load_settings
from storage import Store

RECORDED = Path(__file__).parent / "data" / "bluesky"
QUOTE_VIEW = json.loads((RECORDED / "quote_post_view.json").read_text())
EVENTS = [json.loads(line) for line in (RECORDED / "jetstream_events.jsonl").read_text().splitlines()]
MARSHAL = "did:plc:kvwvcn5iqfooopmyzvb4qzba"
ALICE = "did:plc:alice000000000000000000"
BOB = "did:plc:bob00000000000000000000"
FEED = "/xrpc/app.bsky.feed.getAuthorFeed"
PROFILES = "/xrpc/app.bsky.actor.getProfiles"
SESSION = "/xrpc/com.atproto.server.createSession"
MENTION_TYPE = "app.bsky.richtext.facet#mention"


class Xrpc:
    """A real HTTP server on 127.0.0.1 answering XRPC GETs from a script per path: (status, body, headers)."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, Any, dict[str, str]]]] = {}
        self.asked: list[tuple[str, dict[str, list[str]]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                server.asked.append((url.path, parse_qs(url.query)))
                answers = server.script.get(url.path) or [(404, {"error": "NotFound"}, {})]
                status, body, headers = answers.pop(0) if len(answers) > 1 else answers[0]
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def answer(self, path: str, *answers: Any, status: int = 200, **headers: str) -> None:
        self.script[path] = [(status, body, headers) for body in answers]

    def feed_calls(self) -> list[dict[str, list[str]]]:
        return [query for path, query in self.asked if path == FEED]


@pytest.fixture
def xrpc() -> Iterator[Xrpc]:
    server = Xrpc()
    yield server
    server.http.shutdown()
    server.http.server_close()


def make_source(xrpc: Xrpc, **kwargs: Any) -> BlueskySource:
    client = Client(base_url=xrpc.url, request=Request(timeout=5.0))
    kwargs.setdefault("known_dids", {"alice.bsky.social": ALICE})
    return BlueskySource("bluesky", client, kwargs.pop("accounts", ["alice.bsky.social"]), **kwargs)


def view(
    rkey: str, text: str, at: str, did: str = ALICE, handle: str = "alice.bsky.social", **record
) -> dict:
    """A postView as getAuthorFeed serves it, for a post made and indexed at `at`."""
    return {
        "uri": f"at://{did}/app.bsky.feed.post/{rkey}",
        "cid": f"bafy{rkey}",
        "author": {"did": did, "handle": handle},
        "record": {"$type": "app.bsky.feed.post", "text": text, "createdAt": at, "langs": ["en"], **record},
        "indexedAt": at,
    }


def page(*items: dict, cursor: str | None = None) -> dict:
    return {"feed": [i if "post" in i else {"post": i} for i in items]} | (
        {"cursor": cursor} if cursor else {}
    )


def test_a_first_poll_takes_only_the_newest_posts_with_their_link_and_language(xrpc):
    xrpc.answer(
        FEED,
        page(
            view("3new", "I'm up for a cage match if he is lol", "2026-11-20T10:00:02Z"),
            view("3mid", "b", "2026-11-20T10:00:01Z"),
            cursor="older",
        ),
    )
    fetch = make_source(xrpc, first_poll_limit=2).fetch("alice.bsky.social", None)
    assert [p.text for p in fetch.posts] == ["b", "I'm up for a cage match if he is lol"]
    newest = fetch.posts[-1]
    assert newest.key == f"bluesky:at://{ALICE}/app.bsky.feed.post/3new"
    assert newest.url == "https://bsky.app/profile/alice.bsky.social/post/3new"
    assert (newest.author, newest.author_id, newest.lang, newest.kind) == (
        "alice.bsky.social",
        ALICE,
        "en",
        "post",
    )
    assert json.loads(fetch.cursor) == {"at": "2026-11-20T10:00:02.000+00:00", "uri": newest.id}
    (asked,) = xrpc.feed_calls()
    assert asked["actor"] == [ALICE] and asked["limit"] == ["2"]


def test_handles_are_resolved_once_and_handed_back_to_be_stored(xrpc):
    xrpc.answer(PROFILES, {"profiles": [{"did": ALICE, "handle": "alice.bsky.social"}]})
    xrpc.answer(FEED, page())
    source = make_source(xrpc, known_dids={})
    first = source.fetch("alice.bsky.social", None)
    second = source.fetch("alice.bsky.social", None)
    assert first.accounts == (("bluesky", "alice.bsky.social", ALICE),)
    assert second.accounts == ()
    assert [path for path, _ in xrpc.asked].count(PROFILES) == 1


def test_an_account_bluesky_does_not_know_fails_with_its_name(xrpc):
    xrpc.answer(PROFILES, {"profiles": []})
    with pytest.raises(SourceError, match=r"no Bluesky account named @nobody\.bsky\.social"):
        make_source(xrpc, accounts=["nobody.bsky.social"], known_dids={}).fetch("nobody.bsky.social", None)


def test_the_next_poll_pages_back_to_a_margin_past_the_newest_post_already_seen(xrpc):
    seen = view("3old", "seen", "2026-11-20T10:00:00Z")
    xrpc.answer(
        FEED,
        page(view("3d", "d", "2026-11-20T10:00:04Z"), view("3c", "c", "2026-11-20T10:00:03Z"), cursor="p2"),
        page(
            view("3b", "b", "2026-11-20T10:00:01Z"),
            seen,
            view("3z", "older", "2026-11-19T00:00:00Z"),
            cursor="p3",
        ),
    )
    cursor = json.dumps({"at": "2026-11-20T10:00:00Z", "uri": seen["uri"]})
    fetch = make_source(xrpc).fetch("alice.bsky.social", cursor)
    # The seen post is within the 15-minute margin and read again (the store keeps it once); a day older
    # is past it.
    assert [p.text for p in fetch.posts] == ["seen", "b", "c", "d"]
    assert json.loads(fetch.cursor)["uri"].endswith("/3d")
    first, second = xrpc.feed_calls()
    assert "cursor" not in first and second["cursor"] == ["p2"]
    assert len(xrpc.feed_calls()) == 2


def test_nothing_new_keeps_the_cursor_and_returns_only_what_the_margin_reads_again(xrpc):
    seen = view("3old", "seen", "2026-11-20T10:00:00Z")
    xrpc.answer(FEED, page(seen, view("3z", "older", "2026-11-19T00:00:00Z"), cursor="p2"))
    cursor = json.dumps({"at": "2026-11-20T10:00:00Z", "uri": seen["uri"]})
    fetch = make_source(xrpc).fetch("alice.bsky.social", cursor)
    assert [p.text for p in fetch.posts] == ["seen"] and fetch.cursor == cursor and fetch.read == 2
    assert len(xrpc.feed_calls()) == 1


def test_a_reply_names_its_parent_and_thread_and_a_mention_becomes_a_handle(xrpc):
    parent = f"at://{BOB}/app.bsky.feed.post/3parent"
    reply = view(
        "3reply",
        "@bob.bsky.social sure, name the place",
        "2026-11-20T10:00:00Z",
        reply={"parent": {"uri": parent, "cid": "c1"}, "root": {"uri": parent, "cid": "c1"}},
        facets=[
            {
                "index": {"byteStart": 0, "byteEnd": 16},
                "features": [{"$type": "app.bsky.richtext.facet#mention", "did": BOB}],
            },
            {
                "index": {"byteStart": 0, "byteEnd": 1},
                "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:unnamed"}],
            },
        ],
    )
    item = {
        "post": reply,
        "reply": {"parent": view("3parent", "fight?", "2026-11-20T09:00:00Z", BOB, "bob.bsky.social")},
    }
    xrpc.answer(FEED, page(item))
    (post,) = make_source(xrpc).fetch("alice.bsky.social", None).posts
    assert (post.kind, post.reply_to, post.conversation_id) == ("reply", parent, parent)
    assert post.mentions == ("bob.bsky.social", "did:plc:unnamed")


def test_a_recorded_quote_with_media_names_the_quoted_post(xrpc):
    xrpc.answer(FEED, page(QUOTE_VIEW))
    source = make_source(xrpc, accounts=["test.marshal.dev"], known_dids={"test.marshal.dev": MARSHAL})
    (post,) = source.fetch("test.marshal.dev", None).posts
    assert post.kind == "quote"
    assert post.quote_of == f"at://{MARSHAL}/app.bsky.feed.post/3kahesw26il2z"
    assert post.url == "https://bsky.app/profile/test.marshal.dev/post/3kaheyt6vpc22"
    assert post.version_id == QUOTE_VIEW["cid"] and post.raw["post"]["uri"] == QUOTE_VIEW["uri"]


def test_a_repost_is_the_reposters_post_with_the_original_text(xrpc):
    original = view(
        "3orig", "I'm up for a cage match if he is lol", "2026-11-20T09:00:00Z", BOB, "bob.bsky.social"
    )
    repost_uri = f"at://{ALICE}/app.bsky.feed.repost/3rp"
    reason = {
        "$type": "app.bsky.feed.defs#reasonRepost",
        "by": {"did": ALICE, "handle": "alice.bsky.social"},
        "uri": repost_uri,
        "indexedAt": "2026-11-20T10:00:00Z",
    }
    xrpc.answer(FEED, page({"post": original, "reason": reason}))
    fetch = make_source(xrpc).fetch("alice.bsky.social", None)
    (post,) = fetch.posts
    assert (post.id, post.kind, post.author) == (repost_uri, "repost", "alice.bsky.social")
    assert post.quote_of == original["uri"] and post.text == "I'm up for a cage match if he is lol"
    assert post.mentions == ("bob.bsky.social",)
    assert json.loads(fetch.cursor) == {"at": "2026-11-20T10:00:00.000+00:00", "uri": repost_uri}


def test_an_edited_post_is_a_new_version_of_the_same_key(xrpc, store: Store, detector):
    first = view("3e", "see you there", "2026-11-20T10:00:00Z")
    # The AppView indexes an updated record again: a new CID, the new text, a later indexedAt.
    edited = first | {
        "cid": "bafyedited",
        "record": first["record"] | {"text": "see you in the cage"},
        "indexedAt": "2026-11-20T10:05:00Z",
    }
    pipeline = Pipeline(store, detector, {"bluesky": make_source(xrpc)}, [])
    xrpc.answer(FEED, page(first))
    pipeline.poll("bluesky", "alice.bsky.social")
    xrpc.answer(FEED, page(edited, first))
    saved = pipeline.poll("bluesky", "alice.bsky.social")
    assert saved is not None and saved.new_posts == 0
    key = f"bluesky:at://{ALICE}/app.bsky.feed.post/3e"
    rows = store.db.execute(
        "SELECT version_id, text FROM post_versions WHERE post_key = ? ORDER BY version", [key]
    )
    assert [tuple(r) for r in rows] == [("bafy3e", "see you there"), ("bafyedited", "see you in the cage")]


def test_a_post_missing_fields_is_quarantined_and_the_others_are_kept(xrpc):
    broken = view("3bad", "x", "2026-11-20T10:00:01Z")
    del broken["record"]["text"]
    no_date = view("3nodate", "y", "2026-11-20T10:00:02Z")
    del no_date["record"]["createdAt"]
    xrpc.answer(FEED, page(no_date, broken, view("3ok", "fine", "2026-11-20T10:00:00Z")))
    fetch = make_source(xrpc).fetch("alice.bsky.social", None)
    assert [p.text for p in fetch.posts] == ["fine"]
    reasons = sorted(r.error for r in fetch.rejected)
    assert reasons == ["field 'record.text' is missing or not text", "missing field 'createdAt'"]
    assert json.loads(fetch.cursor)["uri"].endswith("/3nodate")


def in_an_hour() -> int:
    return int(utcnow().timestamp()) + 3600


def test_a_429_pauses_the_feed_until_the_ratelimit_reset(xrpc):
    reset = in_an_hour()
    xrpc.answer(FEED, {"error": "RateLimitExceeded"}, status=429, **{"ratelimit-reset": str(reset)})
    with pytest.raises(RateLimited) as raised:
        make_source(xrpc).fetch("alice.bsky.social", None)
    assert raised.value.reset_at.timestamp() == reset
    assert "429" in str(raised.value)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_is_a_source_error_with_the_reason(xrpc, status):
    xrpc.answer(FEED, {"error": "AuthMissing", "message": "Authentication Required"}, status=status)
    with pytest.raises(SourceError, match=rf"refused access \({status}\).*Authentication Required"):
        make_source(xrpc).fetch("alice.bsky.social", None)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_server_error_is_a_source_error_to_retry(xrpc, status):
    xrpc.answer(FEED, {"error": "InternalServerError"}, status=status)
    with pytest.raises(SourceError, match=rf"Bluesky server error \({status}\)"):
        make_source(xrpc).fetch("alice.bsky.social", None)


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"feed": "not a list"}', b"[1, 2]"])
def test_a_malformed_answer_is_a_source_error(xrpc, body):
    xrpc.answer(FEED, body)
    with pytest.raises(SourceError, match="getAuthorFeed"):
        make_source(xrpc).fetch("alice.bsky.social", None)


def test_a_refused_login_names_the_variables_and_never_the_password(xrpc):
    xrpc.answer(
        "/xrpc/com.atproto.server.createSession",
        {"error": "AuthenticationRequired", "message": "Invalid identifier or password"},
        status=401,
    )
    source = make_source(xrpc, login=("me.bsky.social", "abcd-efgh-ijkl-mnop"))
    with pytest.raises(SourceError) as raised:
        source.fetch("alice.bsky.social", None)
    assert str(raised.value) == (
        "Bluesky refused access (401) to BLUESKY_HANDLE and BLUESKY_APP_PASSWORD: "
        "Invalid identifier or password"
    )
    assert xrpc.feed_calls() == []


def test_an_unreachable_appview_is_a_source_error():
    client = Client(base_url="http://127.0.0.1:9", request=Request(timeout=2.0))
    source = BlueskySource("bluesky", client, ["alice.bsky.social"], known_dids={"alice.bsky.social": ALICE})
    with pytest.raises(SourceError, match="cannot reach Bluesky"):
        source.fetch("alice.bsky.social", None)


def test_a_challenge_polled_from_bluesky_is_stored_as_a_hit(xrpc, store: Store, shipped_detector):
    xrpc.answer(FEED, page(view("3cage", "I'm up for a cage match if he is lol", "2026-11-20T10:00:00Z")))
    pipeline = Pipeline(store, shipped_detector, {"bluesky": make_source(xrpc)}, [])
    saved = pipeline.poll("bluesky", "alice.bsky.social")
    assert saved is not None and saved.new_posts == 1 and saved.new_hits >= 1
    key = f"bluesky:at://{ALICE}/app.bsky.feed.post/3cage"
    assert store.db.execute("SELECT count(*) FROM hits WHERE post_key = ?", [key]).fetchone()[0] >= 1
    assert pipeline.poll("bluesky", "alice.bsky.social").new_posts == 0


def test_source_health_shows_the_bluesky_feed_with_its_error_and_pause(xrpc, store: Store, detector):
    pipeline = Pipeline(store, detector, {"bluesky": make_source(xrpc)}, [])
    xrpc.answer(FEED, page(view("3a", "hello", "2026-11-20T10:00:00Z")))
    pipeline.poll("bluesky", "alice.bsky.social")
    reset = in_an_hour()
    xrpc.answer(FEED, {"error": "RateLimitExceeded"}, status=429, **{"ratelimit-reset": str(reset)})
    pipeline.poll("bluesky", "alice.bsky.social")
    table = store.report("source-health")
    (row,) = [dict(zip(table.columns, r, strict=True)) for r in table.rows]
    assert (row["source"], row["feed"], row["polls"], row["errors"]) == ("bluesky", "alice.bsky.social", 2, 1)
    assert row["last_success"] is not None
    until = datetime.fromtimestamp(reset, UTC)
    assert row["last_error"] == f"Bluesky rate limit reached (429); paused until {iso(until)}"
    assert store.feed_state("bluesky", "alice.bsky.social").paused_until == until


class Recorder:
    """A channel that takes every alert (the pipeline makes one outbox row per hit and channel)."""

    name = "recorder"

    def send(self, alert: Any) -> None:
        pass


def test_a_post_filed_below_the_saved_one_by_a_slow_clock_is_stored_and_nothing_alerts_twice(
    xrpc, store: Store, shipped_detector
):
    seen = view("3x", "old one", "2026-11-20T10:00:00Z")
    # Written on a phone whose clock is 2 minutes slow and indexed after `seen`: the AppView sorts by
    # min(indexedAt, createdAt), so it is served below `seen`.
    slow = view("3p", "I'm up for a cage match if he is lol", "2026-11-20T09:59:00Z")
    slow["indexedAt"] = "2026-11-20T10:00:30Z"
    newer = view("3n", "newer", "2026-11-20T10:01:00Z")
    pipeline = Pipeline(store, shipped_detector, {"bluesky": make_source(xrpc)}, [Recorder()])
    xrpc.answer(FEED, page(seen))
    pipeline.poll("bluesky", "alice.bsky.social")
    xrpc.answer(FEED, page(newer, seen, slow))
    second = pipeline.poll("bluesky", "alice.bsky.social")
    alerts = store.counts()["alerts"]
    third = pipeline.poll("bluesky", "alice.bsky.social")  # the same page again: all of it in the margin
    assert second is not None and second.new_posts == 2 and alerts >= 1
    assert third is not None and third.new_posts == 0 and store.counts()["alerts"] == alerts
    texts = sorted(r[0] for r in store.db.execute("SELECT text FROM posts"))
    assert texts == ["I'm up for a cage match if he is lol", "newer", "old one"]
    # post_versions holds a post's versions once it has more than one: none was read as changed.
    assert store.db.execute("SELECT count(*) FROM post_versions").fetchone()[0] == 0
    cursor = json.loads(store.feed_state("bluesky", "alice.bsky.social").cursor)
    assert cursor["uri"] == newer["uri"]


def test_a_poll_cut_short_by_the_page_cap_says_so_in_the_log(xrpc, caplog):
    xrpc.answer(FEED, page(view("3new", "new", "2026-11-20T12:00:00Z"), cursor="more"))
    cursor = json.dumps({"at": "2026-11-20T10:00:00Z", "uri": f"at://{ALICE}/app.bsky.feed.post/3old"})
    with caplog.at_level("WARNING", logger="ringside.bluesky"):
        make_source(xrpc).fetch("alice.bsky.social", cursor)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "stopped after 20 pages" in warning and "not fetched" in warning


def test_a_mention_of_a_watched_account_is_its_handle_even_when_the_page_does_not_show_it(xrpc):
    text = "@bob.bsky.social cage match, you and me"
    facet = {"index": {"byteStart": 0, "byteEnd": 16}, "features": [{"$type": MENTION_TYPE, "did": BOB}]}
    xrpc.answer(FEED, page(view("3m", text, "2026-11-20T10:00:00Z", facets=[facet])))
    known = {"alice.bsky.social": ALICE, "bob.bsky.social": BOB}
    source = make_source(xrpc, accounts=["alice.bsky.social", "bob.bsky.social"], known_dids=known)
    (post,) = source.fetch("alice.bsky.social", None).posts
    assert post.mentions == ("bob.bsky.social",)


def test_a_mention_of_an_unknown_account_is_named_as_the_text_writes_it_counting_utf8_bytes(xrpc):
    text = "¡Olé! @Carol.example.com, cage match?"
    start = len("¡Olé! ".encode())
    facet = {
        "index": {"byteStart": start, "byteEnd": start + len("@Carol.example.com")},
        "features": [{"$type": MENTION_TYPE, "did": "did:plc:carol"}],
    }
    xrpc.answer(FEED, page(view("3m", text, "2026-11-20T10:00:00Z", facets=[facet])))
    (post,) = make_source(xrpc).fetch("alice.bsky.social", None).posts
    assert post.mentions == ("carol.example.com",)


def session(did: str = "did:plc:me") -> dict:
    """A createSession answer whose tokens the atproto client can read (it looks at their expiry)."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    token = ".".join([part({"alg": "HS256", "typ": "JWT"}), part({"sub": did, "exp": 4102444800}), "sig"])
    return {"did": did, "handle": "me.bsky.social", "accessJwt": token, "refreshJwt": token}


def test_a_revoked_session_is_replaced_by_one_new_login_and_the_poll_goes_on(xrpc):
    xrpc.answer(SESSION, session())
    refused = (401, {"error": "InvalidToken", "message": "Token has been revoked"}, {})
    xrpc.script[FEED] = [
        (200, page(), {}),
        refused,
        (200, page(view("3a", "hi", "2026-11-20T10:00:00Z")), {}),
    ]
    source = make_source(xrpc, login=("me.bsky.social", "abcd-efgh-ijkl-mnop"))
    source.fetch("alice.bsky.social", None)
    (post,) = source.fetch("alice.bsky.social", None).posts
    assert post.text == "hi"
    assert [path for path, _ in xrpc.asked].count(SESSION) == 2


def test_a_session_refused_again_after_a_new_login_fails_the_poll(xrpc):
    xrpc.answer(SESSION, session())
    xrpc.answer(FEED, {"error": "ExpiredToken", "message": "Token has expired"}, status=400)
    source = make_source(xrpc, login=("me.bsky.social", "abcd-efgh-ijkl-mnop"))
    with pytest.raises(SourceError, match="Token has expired"):
        source.fetch("alice.bsky.social", None)
    assert [path for path, _ in xrpc.asked].count(SESSION) == 2


@pytest.mark.parametrize("reset", ["1795000000000", "4102444800", "soon"])
def test_a_ratelimit_reset_that_is_not_a_sane_time_counts_as_absent(xrpc, reset):
    xrpc.answer(FEED, {"error": "RateLimitExceeded"}, status=429, **{"ratelimit-reset": reset})
    with pytest.raises(RateLimited) as raised:
        make_source(xrpc).fetch("alice.bsky.social", None)
    assert raised.value.reset_at - datetime.now(UTC) <= timedelta(minutes=5)


# -- Jetstream ---------------------------------------------------------------------------------------------


class Jetstream:
    """A real websocket server on 127.0.0.1 that replays `events` from the cursor a client asks for (time_us
    at or after it), only the wanted DIDs' commits; identity and account events go to everyone. With
    `drop_after`, the first connection is cut after that many events."""

    def __init__(self, events: list[Any], drop_after: int | None = None) -> None:
        self.events = events
        self.drop_after = drop_after
        self.paths: list[str] = []
        self.closed = threading.Event()  # set when a client closes its connection
        self.server = serve(self.handle, "127.0.0.1", 0)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/subscribe"

    def asked(self, index: int = -1) -> dict[str, list[str]]:
        return parse_qs(urlparse(self.paths[index]).query)

    def handle(self, connection: Any) -> None:
        self.paths.append(connection.request.path)
        asked = self.asked()
        cursor = int(asked.get("cursor", ["0"])[0])
        wanted = set(asked.get("wantedDids", []))
        sent = 0
        for event in self.events:
            old = isinstance(event, dict) and event["time_us"] < cursor
            if old or (isinstance(event, dict) and event["kind"] == "commit" and event["did"] not in wanted):
                continue
            if self.drop_after is not None and len(self.paths) == 1 and sent == self.drop_after:
                return  # the connection drops
            connection.send(event if isinstance(event, str) else json.dumps(event))
            sent += 1
        for _ in connection:  # keep the connection open until the client leaves
            pass
        self.closed.set()

    def close(self) -> None:
        self.server.shutdown()


def post_event(rkey: str, text: str, time_us: int, did: str = ALICE, operation: str = "create") -> dict:
    record = {
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": "2026-11-20T10:00:00.000Z",
        "langs": ["en"],
    }
    commit = {
        "rev": f"rev{time_us}",
        "operation": operation,
        "collection": "app.bsky.feed.post",
        "rkey": rkey,
    }
    return {
        "did": did,
        "time_us": time_us,
        "kind": "commit",
        "commit": commit | {"record": record, "cid": f"c{time_us}"},
    }


def jetstream_source(xrpc: Xrpc, server: Jetstream, **kwargs: Any) -> JetstreamSource:
    accounts = make_source(
        xrpc,
        accounts=kwargs.pop("accounts", ["alice.bsky.social"]),
        known_dids=kwargs.pop("known_dids", None)
        or {"alice.bsky.social": ALICE, "test.marshal.dev": MARSHAL},
    )
    return JetstreamSource(accounts, server.url, timeout=5.0, backoff=0.05, **kwargs)


def fetch_until(
    source: JetstreamSource, count: int, cursor: str | None = None
) -> tuple[list, str | None, list]:
    """Fetch (saving the cursor as the pipeline would) until `count` distinct posts came, or 20 s passed
    (a loaded machine may take a while to reconnect)."""
    posts, rejected = [], []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        fetch = source.fetch(JETSTREAM_FEED, cursor)
        posts += fetch.posts
        rejected += fetch.rejected
        cursor = fetch.cursor
        if len({post.key for post in posts}) >= count:  # distinct, as the store counts them: a restart
            break  # replays from the last event it had, so that one may come twice
    return posts, cursor, rejected


@pytest.fixture
def jetstream_server() -> Iterator[Any]:
    servers: list[Jetstream] = []

    def start(events: list[Any], drop_after: int | None = None) -> Jetstream:
        servers.append(Jetstream(events, drop_after))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_jetstream_turns_recorded_post_commits_into_posts_and_ignores_the_rest(xrpc, jetstream_server):
    server = jetstream_server(EVENTS)
    source = jetstream_source(xrpc, server, accounts=["test.marshal.dev"])
    try:
        posts, cursor, _ = fetch_until(source, 2)
    finally:
        source.close()
    assert [p.text for p in posts] == ["test", ""]
    quote = posts[1]
    assert quote.kind == "quote" and quote.quote_of == f"at://{MARSHAL}/app.bsky.feed.post/3kahesw26il2z"
    assert quote.url == "https://bsky.app/profile/test.marshal.dev/post/3kaheyt6vpc22"
    assert cursor in ("1725911162500000", "1725911162600000")  # the delete after them may be in the batch
    asked = server.asked(0)
    assert asked["wantedDids"] == [MARSHAL] and asked["wantedCollections"] == ["app.bsky.feed.post"]
    assert "cursor" not in asked


def test_jetstream_quarantines_a_message_that_is_not_an_event(xrpc, jetstream_server):
    server = jetstream_server(["not json {", post_event("3a", "after it", 10)])
    source = jetstream_source(xrpc, server)
    try:
        posts, cursor, rejected = fetch_until(source, 1)
    finally:
        source.close()
    assert [p.text for p in posts] == ["after it"] and cursor == "10"
    assert [(r.record, r.error) for r in rejected] == [("not json {", "not a Jetstream event (no time_us)")]


def test_a_jetstream_batch_whose_cursor_was_not_saved_is_handed_out_again(xrpc, jetstream_server):
    server = jetstream_server([post_event(f"3p{n}", f"post {n}", n) for n in range(1, 7)])
    source = jetstream_source(xrpc, server, batch=3)
    try:
        first = source.fetch(JETSTREAM_FEED, None)
        again = source.fetch(JETSTREAM_FEED, None)  # the store did not save the first batch's cursor
        rest, cursor, _ = fetch_until(source, 6 - len(first.posts), again.cursor)
    finally:
        source.close()
    assert first.posts and again.posts == first.posts and again.cursor == first.cursor
    assert [p.text for p in first.posts + tuple(rest)] == [f"post {n}" for n in range(1, 7)]
    assert cursor == "6"


def test_after_a_restart_jetstream_resumes_from_the_saved_cursor_without_loss_or_doubles(
    xrpc, jetstream_server, tmp_path, detector
):
    events = [post_event(f"3p{n}", f"post {n}", 1_000 + n) for n in range(1, 9)]
    server = jetstream_server(events)
    database = tmp_path / "ringside.db"
    store = Store.open(database)
    source = jetstream_source(xrpc, server, batch=3)
    pipeline = Pipeline(store, detector, {"bluesky": source}, [])
    try:
        while store.feed_state("bluesky", JETSTREAM_FEED).cursor is None:
            pipeline.poll("bluesky", JETSTREAM_FEED)
    finally:
        source.close()  # the service stops (or is killed) here
        store.close()
    saved = Store.open(database)
    cursor = saved.feed_state("bluesky", JETSTREAM_FEED).cursor
    stored_before = saved.db.execute("SELECT count(*) FROM posts").fetchone()[0]
    restarted = jetstream_source(xrpc, server, batch=3)
    pipeline = Pipeline(saved, detector, {"bluesky": restarted}, [])
    try:
        for _ in range(50):
            pipeline.poll("bluesky", JETSTREAM_FEED)
            if saved.feed_state("bluesky", JETSTREAM_FEED).cursor == "1008":
                break
    finally:
        restarted.close()
    texts = [row[0] for row in saved.db.execute("SELECT text FROM posts ORDER BY text")]
    saved.close()
    assert 1 <= stored_before < 8 and server.asked(-1)["cursor"] == [cursor]
    assert texts == [f"post {n}" for n in range(1, 9)]


def test_a_jetstream_update_is_a_new_version_and_a_delete_keeps_what_is_stored(
    xrpc, jetstream_server, store, detector
):
    events = [
        post_event("3e", "see you there", 1),
        post_event("3e", "see you in the cage", 2, operation="update"),
        {
            "did": ALICE,
            "time_us": 3,
            "kind": "commit",
            "commit": {"rev": "r3", "operation": "delete", "collection": "app.bsky.feed.post", "rkey": "3e"},
        },
    ]
    source = jetstream_source(xrpc, jetstream_server(events), batch=1)
    pipeline = Pipeline(store, detector, {"bluesky": source}, [])
    try:
        for _ in range(50):
            pipeline.poll("bluesky", JETSTREAM_FEED)
            if store.feed_state("bluesky", JETSTREAM_FEED).cursor == "3":
                break
    finally:
        source.close()
    key = f"bluesky:at://{ALICE}/app.bsky.feed.post/3e"
    rows = store.db.execute(
        "SELECT version_id, text FROM post_versions WHERE post_key = ? ORDER BY version", [key]
    )
    assert [tuple(r) for r in rows] == [("c1", "see you there"), ("c2", "see you in the cage")]
    assert (
        store.db.execute("SELECT text FROM posts WHERE key = ?", [key]).fetchone()[0] == "see you in the cage"
    )


def test_a_dropped_jetstream_connection_reconnects_from_the_last_event_and_logs_once(
    xrpc, jetstream_server, caplog
):
    server = jetstream_server([post_event(f"3p{n}", f"post {n}", n) for n in range(1, 5)], drop_after=2)
    source = jetstream_source(xrpc, server)
    try:
        with caplog.at_level("INFO", logger="ringside.bluesky"):
            posts, cursor, _ = fetch_until(source, 5)
    finally:
        source.close()
    # Jetstream replays from the cursor inclusive: event 2 comes twice, and the pipeline's dedup by key
    # stores it once.
    assert sorted({p.text for p in posts}) == ["post 1", "post 2", "post 3", "post 4"] and cursor == "4"
    assert server.asked(1)["cursor"] == ["2"]
    lost = [r for r in caplog.records if "connection lost" in r.getMessage()]
    assert len(lost) == 1


def test_an_unreachable_jetstream_fails_the_feed_with_the_reason(xrpc):
    accounts = make_source(xrpc)
    source = JetstreamSource(accounts, "ws://127.0.0.1:9/subscribe", timeout=2.0, backoff=0.05)
    try:
        with pytest.raises(SourceError, match="Jetstream connection lost"):
            for _ in range(10):
                source.fetch(JETSTREAM_FEED, None)
    finally:
        source.close()


def test_a_jetstream_source_with_a_login_signs_in_before_looking_up_its_accounts(xrpc, jetstream_server):
    xrpc.answer(SESSION, session())
    xrpc.answer(PROFILES, {"profiles": [{"did": ALICE, "handle": "alice.bsky.social"}]})
    server = jetstream_server([post_event("3a", "hello", 1)])
    accounts = make_source(xrpc, known_dids={}, login=("me.bsky.social", "abcd-efgh-ijkl-mnop"))
    source = JetstreamSource(accounts, server.url, timeout=5.0, backoff=0.05)
    try:
        posts, _, _ = fetch_until(source, 1)
    finally:
        source.close()
    assert [p.text for p in posts] == ["hello"]
    assert [path for path, _ in xrpc.asked][:2] == [SESSION, PROFILES]


def test_an_account_left_out_at_the_start_is_subscribed_once_bluesky_knows_it(xrpc, jetstream_server):
    xrpc.answer(
        PROFILES,
        {"profiles": [{"did": ALICE, "handle": "alice.bsky.social"}]},
        {"profiles": [{"did": BOB, "handle": "bob.bsky.social"}]},
    )
    server = jetstream_server([post_event("3a", "from alice", 1), post_event("3b", "from bob", 2, did=BOB)])
    accounts = make_source(xrpc, accounts=["alice.bsky.social", "bob.bsky.social"], known_dids={})
    source = JetstreamSource(accounts, server.url, timeout=5.0, backoff=0.05, retry_missing=0.0)
    try:
        posts, _, _ = fetch_until(source, 2)
    finally:
        source.close()
    assert {p.text for p in posts} == {"from alice", "from bob"}
    assert server.asked(-1)["wantedDids"] == sorted([ALICE, BOB])


def test_a_jetstream_url_with_a_port_out_of_range_fails_the_feed_with_the_reason(xrpc):
    source = JetstreamSource(make_source(xrpc), "ws://127.0.0.1:99999/subscribe", timeout=2.0, backoff=0.05)
    try:
        with pytest.raises(SourceError, match="Jetstream connection lost: ValueError"):
            for _ in range(10):
                source.fetch(JETSTREAM_FEED, None)
        assert source.reader is not None and source.reader.is_alive()
    finally:
        source.close()


def test_a_jetstream_reader_that_stopped_is_started_again_at_the_next_fetch(xrpc, jetstream_server):
    server = jetstream_server([post_event(f"3p{n}", f"post {n}", n) for n in range(1, 4)])
    source = jetstream_source(xrpc, server)
    try:
        _, cursor, _ = fetch_until(source, 3)
        assert source.reader is not None
        source.reader.stop()  # as if it had died
        source.fetch(JETSTREAM_FEED, cursor)
        assert source.reader.is_alive() and len(server.paths) == 2
        assert server.asked(-1)["cursor"] == ["3"]
    finally:
        source.close()


def test_the_service_closes_the_jetstream_connection_when_it_stops(
    xrpc, jetstream_server, write_config, tmp_path
):
    server = jetstream_server([post_event("3a", "hello", 1)])
    xrpc.answer(PROFILES, {"profiles": [{"did": ALICE, "handle": "alice.bsky.social"}]})
    path = write_config(
        f'[storage]\npath = "{tmp_path / "ringside.db"}"\n[[sources]]\nname = "sky"\ntype = "bluesky"\n'
        f'accounts = ["alice.bsky.social"]\nmode = "jetstream"\nevery = "1s"\n'
        f'api_url = "{xrpc.url}"\njetstream_url = "{server.url}"\n'
    )
    settings = load_settings(path, environ={})
    store = Store.open(settings.database)
    stop = threading.Event()
    runner = threading.Thread(
        target=Service(settings, build_pipeline(settings, store)).run_until, args=[stop]
    )
    runner.start()
    try:
        for _ in range(200):
            if store.counts()["posts"] == 1:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        runner.join(30)
        store.close()
    assert not runner.is_alive() and server.paths
    assert server.closed.wait(10)


# -- settings ----------------------------------------------------------------------------------------------

BLUESKY = '[[sources]]\nname = "sky"\ntype = "bluesky"\naccounts = ["Alice.bsky.social", "@example.com"]\n'
ROOT = Path(__file__).resolve().parent.parent


def test_a_bluesky_source_needs_no_credentials_and_polls_the_public_appview(write_config):
    settings = load_settings(write_config(BLUESKY), environ={})
    (config,) = settings.sources
    assert (config.type, config.every, config.secrets) == ("bluesky", 120.0, {})
    assert config.options["accounts"] == ["alice.bsky.social", "example.com"]
    source = build_source(config, {})
    assert isinstance(source, BlueskySource) and source.feeds() == ["alice.bsky.social", "example.com"]
    assert str(source.client._base_url) == "https://public.api.bsky.app/xrpc"


def test_jetstream_mode_is_one_feed_for_every_account(write_config):
    settings = load_settings(write_config(BLUESKY + 'mode = "jetstream"\n'), environ={})
    source = build_source(settings.sources[0], {"alice.bsky.social": ALICE})
    assert isinstance(source, JetstreamSource) and source.feeds() == [JETSTREAM_FEED]
    assert source.url == "wss://jetstream2.us-east.bsky.network/subscribe"


@pytest.mark.parametrize(
    ("extra", "accounts", "message"),
    [
        ("", '["elon musk"]', r"sources\[0\]\.accounts: 'elon musk' is not a Bluesky handle"),
        ("", "[]", r"sources\[0\]\.accounts: expected at least one Bluesky handle"),
        ('mode = "firehose"', '["a.bsky.social"]', r"sources\[0\]\.mode: expected one of: poll, jetstream"),
        (
            "first_poll_limit = 0",
            '["a.bsky.social"]',
            r"sources\[0\]\.first_poll_limit: expected a whole number",
        ),
        (
            'jetstream_url = "http://x"',
            '["a.bsky.social"]',
            r"sources\[0\]\.jetstream_url: expected a wss://",
        ),
        (
            'jetstream_url = "wss://jetstream.example:99999/subscribe"',
            '["a.bsky.social"]',
            r"sources\[0\]\.jetstream_url: .*port",
        ),
        ('api_url = "https://"', '["a.bsky.social"]', r"sources\[0\]\.api_url: expected .* with a host"),
        (
            'api_url = "https://public.api.bsky.app:99999"',
            '["a.bsky.social"]',
            r"sources\[0\]\.api_url: .*port",
        ),
    ],
)
def test_bad_bluesky_settings_are_named_in_one_line(write_config, extra, accounts, message):
    path = write_config(f'[[sources]]\nname = "sky"\ntype = "bluesky"\naccounts = {accounts}\n{extra}\n')
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})


def test_a_handle_without_an_app_password_names_both_variables(write_config):
    with pytest.raises(ConfigError, match="set both BLUESKY_HANDLE and BLUESKY_APP_PASSWORD"):
        load_settings(write_config(BLUESKY), environ={"BLUESKY_HANDLE": "me.bsky.social"})


def test_check_config_shows_the_bluesky_accounts_and_never_the_app_password(write_config):
    path = write_config(BLUESKY)
    env = {
        "PATH": "/usr/bin:/bin",
        "BLUESKY_HANDLE": "me.bsky.social",
        "BLUESKY_APP_PASSWORD": "abcd-efgh-ijkl-mnop",
    }
    run = subprocess.run(
        [sys.executable, str(ROOT / "run_bot.py"), "--config", str(path), "check-config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=path.parent,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    (shown,) = json.loads(run.stdout)["sources"]
    assert shown["accounts"] == ["alice.bsky.social", "example.com"] and shown["mode"] == "poll"
    assert shown["app_password"] == "$BLUESKY_APP_PASSWORD (set, ****)"
    assert "abcd-efgh" not in run.stdout + run.stderr
