"""The Threads source through its real requests session, with Threads API answers served by `responses`."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import responses

import run_bot
from bot.pipeline import Pipeline
from bot.sources import RateLimited, SourceError
from bot.sources.graph import GraphClient
from bot.sources.threads import API, ThreadsSource, TokenKeeper
from bot.timeutil import parse_datetime, utcnow
from config import DEFAULT_RULES

RECORDED = Path(__file__).parent / "data" / "threads"
MY_THREADS = f"{API}/me/threads"
MY_REPLIES = f"{API}/me/replies"
PROFILE_POSTS = f"{API}/profile_posts"
REFRESH = "https://graph.threads.net/refresh_access_token"  # unversioned, as Meta documents it
SECRET = "THAA-test-threads-token-0123456789"
FRESH = "THAA-refreshed-token-9876543210"


def thread(id: str, text: str | None, timestamp: str = "2023-06-21T02:58:00+0000", **fields) -> dict:
    item = {
        "id": id,
        "media_product_type": "THREADS",
        "media_type": "TEXT_POST",
        "permalink": f"https://www.threads.net/@zuck/post/C{id}",
        "timestamp": timestamp,
        "username": "zuck",
        "shortcode": f"C{id}",
        "is_quote_post": False,
        **fields,
    }
    if text is not None:
        item["text"] = text
    return item


def page(*items: dict, after: str | None = None) -> dict:
    body: dict = {"data": list(items)}
    if after:
        body["paging"] = {
            "cursors": {"before": "b", "after": after},
            "next": f"{API}/me/threads?after={after}&access_token=xyz",
        }
    return body


def graph_error(code: int, message: str = "An error", subcode: int | None = None) -> dict:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "A1b2C3"}
    if subcode:
        error["error_subcode"] = subcode
    return {"error": error}


def make_source(tmp_path: Path, accounts=("me",), replies: bool = False, **kwargs) -> ThreadsSource:
    client = GraphClient(API, "Threads", "THREADS_ACCESS_TOKEN", 5.0, None)
    tokens = TokenKeeper(SECRET, "THREADS_ACCESS_TOKEN", tmp_path / "threads-token.json", client)
    tokens.next_refresh = utcnow() + timedelta(days=365)  # these tests are not about refreshing
    return ThreadsSource("threads", client, tokens, accounts, replies=replies, **kwargs)


def unix(moment: str) -> int:
    return int(parse_datetime(moment).timestamp())


def query_of(call) -> dict[str, list[str]]:
    return parse_qs(urlparse(call.request.url).query)


@responses.activate
def test_the_first_poll_takes_one_page_of_the_newest_posts_only(tmp_path):
    items = [thread(str(100 + i), f"post {i}", f"2026-11-0{i + 1}T10:00:00+0000") for i in range(5)]
    responses.get(MY_THREADS, json=page(*reversed(items), after="more"))
    fetch = make_source(tmp_path, first_poll_limit=3).fetch("me", None)
    assert [p.id for p in fetch.posts] == ["102", "103", "104"]
    assert len(responses.calls) == 1
    asked = query_of(responses.calls[0])
    assert asked["limit"] == ["3"] and "since" not in asked
    assert "reposted_post" in asked["fields"][0] and asked["access_token"] == [SECRET]
    assert json.loads(fetch.cursor) == {"threads": unix("2026-11-05T10:00:00Z")}


@responses.activate
def test_the_next_poll_asks_since_the_newest_post_and_follows_after_cursors_to_the_end(tmp_path):
    responses.get(MY_THREADS, json=page(thread("302", "newest", "2026-11-06T10:00:00+0000"), after="p2"))
    responses.get(MY_THREADS, json=page(thread("301", "older", "2026-11-05T12:00:00+0000")))
    fetch = make_source(tmp_path).fetch("me", json.dumps({"threads": unix("2026-11-05T10:00:00Z")}))
    assert [p.id for p in fetch.posts] == ["301", "302"] and fetch.read == 2
    first, second = (query_of(c) for c in responses.calls)
    assert first["since"] == [str(unix("2026-11-05T10:00:00Z"))] and "after" not in first
    assert second["since"] == [str(unix("2026-11-05T10:00:00Z"))] and second["after"] == ["p2"]
    assert json.loads(fetch.cursor) == {"threads": unix("2026-11-06T10:00:00Z")}


@responses.activate
def test_nothing_new_keeps_the_cursor_where_it_was(tmp_path):
    responses.get(MY_THREADS, json={"data": []})
    cursor = json.dumps({"threads": unix("2026-11-05T10:00:00Z")})
    fetch = make_source(tmp_path).fetch("me", cursor)
    assert fetch.posts == () and json.loads(fetch.cursor) == {"threads": unix("2026-11-05T10:00:00Z")}


@responses.activate
def test_the_owner_feed_reads_replies_too_each_endpoint_with_its_own_since(tmp_path):
    responses.get(MY_THREADS, json=page(thread("401", "a post", "2026-11-06T10:00:00+0000")))
    reply = thread(
        "402",
        "@elonmusk Vegas Octagon?",
        "2026-11-06T11:00:00+0000",
        is_reply=True,
        replied_to={"id": "399"},
        root_post={"id": "390"},
    )
    responses.get(MY_REPLIES, json=page(reply))
    cursor = json.dumps({"threads": unix("2026-11-05T10:00:00Z"), "replies": unix("2026-11-04T10:00:00Z")})
    posts = {p.id: p for p in make_source(tmp_path, replies=True).fetch("me", cursor).posts}
    assert (posts["402"].kind, posts["402"].reply_to, posts["402"].conversation_id) == ("reply", "399", "390")
    assert posts["402"].mentions == ("elonmusk",)
    assert posts["401"].kind == "post"
    assert query_of(responses.calls[1])["since"] == [str(unix("2026-11-04T10:00:00Z"))]


@responses.activate
def test_quotes_and_reposts_know_their_kind_and_the_post_they_point_to(tmp_path):
    quote = thread("501", "lol this", is_quote_post=True, quoted_post={"id": "90"})
    # A repost comes as a REPOST_FACADE with no text of its own (Meta's reposts page).
    repost = thread("502", None, media_type="REPOST_FACADE", reposted_post={"id": "91"})
    responses.get(MY_THREADS, json=page(quote, repost))
    posts = {p.id: p for p in make_source(tmp_path).fetch("me", json.dumps({"threads": 1})).posts}
    assert (posts["501"].kind, posts["501"].quote_of, posts["501"].text) == ("quote", "90", "lol this")
    assert (posts["502"].kind, posts["502"].quote_of, posts["502"].text) == ("repost", "91", "")


@responses.activate
def test_a_public_profile_is_read_through_profile_posts_by_username(tmp_path):
    responses.get(PROFILE_POSTS, json=page(thread("601", "hello")))
    (post,) = make_source(tmp_path, accounts=["zuck"]).fetch("zuck", None).posts
    assert (post.key, post.author, post.url) == (
        "threads:601",
        "zuck",
        "https://www.threads.net/@zuck/post/C601",
    )
    assert query_of(responses.calls[0])["username"] == ["zuck"]


@responses.activate
def test_a_record_without_its_time_is_quarantined_and_one_without_text_or_permalink_is_kept(tmp_path):
    broken = thread("701", "no time")
    del broken["timestamp"]
    bare = thread("702", None)
    del bare["permalink"]
    responses.get(MY_THREADS, json=page(broken, "not an object", bare, thread("703", "fine")))
    fetch = make_source(tmp_path).fetch("me", json.dumps({"threads": 1}))
    assert [p.id for p in fetch.posts] == ["702", "703"]
    assert fetch.posts[0].url == "https://www.threads.net/@zuck/post/C702" and fetch.posts[0].text == ""
    missing_time, not_an_object = fetch.rejected
    assert missing_time.record["id"] == "701" and "timestamp" in missing_time.error
    assert not_an_object.record == "not an object"


@responses.activate
def test_a_post_dated_in_the_future_is_quarantined_and_does_not_move_the_cursor(tmp_path):
    responses.get(MY_THREADS, json=page(thread("711", "from 2099", "2099-01-01T00:00:00+0000")))
    cursor = json.dumps({"threads": unix("2026-11-05T10:00:00Z")})
    fetch = make_source(tmp_path).fetch("me", cursor)
    assert fetch.posts == () and len(fetch.rejected) == 1
    assert json.loads(fetch.cursor) == {"threads": unix("2026-11-05T10:00:00Z")}


@responses.activate
def test_the_documented_example_answer_becomes_posts(tmp_path):
    responses.get(MY_THREADS, json=json.loads((RECORDED / "me_threads.json").read_text(encoding="utf-8")))
    fetch = make_source(tmp_path).fetch("me", None)
    assert [(p.id, p.author, p.text) for p in fetch.posts] == [
        ("9876543210987654", "username", "Check out this image!"),
        ("1234567890123456", "username", "This is a sample Threads post."),
    ]


@responses.activate
def test_a_429_pauses_the_feed_until_meta_says_access_comes_back(tmp_path):
    usage = {
        "17841405309211844": [{"type": "THREADS", "call_count": 100, "estimated_time_to_regain_access": 42}]
    }
    responses.get(
        MY_THREADS,
        status=429,
        json=graph_error(4, "Application request limit reached"),
        headers={"X-Business-Use-Case-Usage": json.dumps(usage)},
    )
    before = utcnow()
    with pytest.raises(RateLimited) as error:
        make_source(tmp_path).fetch("me", None)
    assert before + timedelta(minutes=42) <= error.value.reset_at <= utcnow() + timedelta(minutes=42)
    assert SECRET not in str(error.value)


@pytest.mark.parametrize("minutes", [5_256_000, 10**30])
@responses.activate
def test_an_absurd_time_to_regain_access_pauses_the_feed_for_a_day_at_most(tmp_path, minutes):
    usage = {"1": [{"type": "THREADS", "estimated_time_to_regain_access": minutes}]}
    responses.get(
        MY_THREADS,
        status=429,
        json=graph_error(4, "Application request limit reached"),
        headers={"X-Business-Use-Case-Usage": json.dumps(usage)},
    )
    with pytest.raises(RateLimited) as error:
        make_source(tmp_path).fetch("me", None)
    assert error.value.reset_at <= utcnow() + timedelta(hours=24)


@responses.activate
def test_a_throttling_code_without_a_usage_header_pauses_a_quarter_of_an_hour(tmp_path):
    responses.get(MY_THREADS, status=400, json=graph_error(17, "User request limit reached"))
    before = utcnow()
    with pytest.raises(RateLimited) as error:
        make_source(tmp_path).fetch("me", None)
    assert before + timedelta(minutes=15) <= error.value.reset_at <= utcnow() + timedelta(minutes=15)


@responses.activate
def test_an_expired_token_names_the_variable_to_set_and_never_the_token(tmp_path):
    responses.get(MY_THREADS, status=401, json=graph_error(190, "Error validating access token", 463))
    with pytest.raises(SourceError) as error:
        make_source(tmp_path).fetch("me", None)
    assert "code 190" in str(error.value) and "THREADS_ACCESS_TOKEN" in str(error.value)
    assert SECRET not in str(error.value)


@responses.activate
def test_a_profile_refused_for_want_of_a_permission_names_threads_profile_discovery(tmp_path):
    responses.get(PROFILE_POSTS, status=403, json=graph_error(10, "Application does not have permission"))
    with pytest.raises(SourceError, match="needs threads_basic and threads_profile_discovery"):
        make_source(tmp_path, accounts=["zuck"]).fetch("zuck", None)


@responses.activate
def test_a_5xx_is_a_failed_poll_to_retry_later(tmp_path):
    responses.get(MY_THREADS, status=503, body="<html>Service Unavailable</html>")
    with pytest.raises(SourceError, match=r"Threads server error \(503\)"):
        make_source(tmp_path).fetch("me", None)


@responses.activate
def test_a_body_that_is_not_json_is_a_failed_poll_that_says_so(tmp_path):
    responses.get(MY_THREADS, status=200, body="<html>captive portal</html>")
    with pytest.raises(SourceError, match="not a JSON object"):
        make_source(tmp_path).fetch("me", None)
    responses.replace(responses.GET, MY_THREADS, json={"paging": {}})
    with pytest.raises(SourceError, match="without its 'data' list"):
        make_source(tmp_path).fetch("me", None)


@responses.activate
def test_a_connection_failure_says_so_without_the_address_that_carries_the_token(tmp_path):
    responses.get(MY_THREADS, body=requests.ConnectionError(f"{MY_THREADS}?access_token={SECRET}"))
    with pytest.raises(SourceError) as error:
        make_source(tmp_path).fetch("me", None)
    assert str(error.value) == "cannot reach Threads: ConnectionError"


# -- the access token ---------------------------------------------------------------------------------------


def keeper(tmp_path: Path, env_token: str = SECRET) -> TokenKeeper:
    client = GraphClient(API, "Threads", "THREADS_ACCESS_TOKEN", 5.0, None)
    return TokenKeeper(env_token, "THREADS_ACCESS_TOKEN", tmp_path / "threads-token.json", client)


@responses.activate
def test_a_refreshed_token_is_kept_in_a_file_only_its_owner_can_read_and_preferred_at_the_next_start(
    tmp_path, caplog
):
    responses.get(REFRESH, json={"access_token": FRESH, "token_type": "bearer", "expires_in": 5183944})
    with caplog.at_level(logging.DEBUG):
        assert keeper(tmp_path).current() == FRESH
    asked = query_of(responses.calls[0])
    assert asked["grant_type"] == ["th_refresh_token"] and asked["access_token"] == [SECRET]
    saved = tmp_path / "threads-token.json"
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    assert json.loads(saved.read_text())["access_token"] == FRESH
    restarted = keeper(tmp_path)
    assert restarted.current() == FRESH and len(responses.calls) == 1  # 60 days left: no refresh yet
    assert FRESH not in caplog.text and SECRET not in caplog.text


@responses.activate
def test_a_new_token_set_in_the_environment_wins_over_the_saved_one(tmp_path):
    responses.get(REFRESH, json={"access_token": FRESH, "expires_in": 5183944})
    keeper(tmp_path).current()
    replaced = keeper(tmp_path, env_token="THAA-operator-set-a-new-one-000")
    assert replaced.token == "THAA-operator-set-a-new-one-000" and replaced.expires_at is None


@responses.activate
def test_a_token_that_cannot_be_refreshed_a_week_before_expiry_is_warned_of_in_one_line(tmp_path, caplog):
    responses.get(REFRESH, status=400, json=graph_error(190, "Session has expired"))
    tokens = keeper(tmp_path)
    tokens.expires_at = utcnow() + timedelta(days=5)
    with caplog.at_level(logging.INFO):
        assert tokens.current() == SECRET  # the old token goes on being used while it lasts
        tokens.current()  # the next try waits a day: no second call, no second warning
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "expires on" in warning.getMessage() and "THREADS_ACCESS_TOKEN" in warning.getMessage()
    assert SECRET not in caplog.text and len(responses.calls) == 1


@responses.activate
def test_polls_use_the_refreshed_token(tmp_path):
    responses.get(REFRESH, json={"access_token": FRESH, "expires_in": 5183944})
    responses.get(MY_THREADS, json=page(thread("801", "hi")))
    client = GraphClient(API, "Threads", "THREADS_ACCESS_TOKEN", 5.0, None)
    source = ThreadsSource("threads", client, keeper(tmp_path), ["me"], replies=False)
    source.fetch("me", None)
    assert query_of(responses.calls[1])["access_token"] == [FRESH]


# -- through the pipeline, the store, the reports and the command line -------------------------------------


@responses.activate
def test_a_challenge_on_threads_is_stored_as_a_hit_and_polling_again_stores_nothing_twice(
    tmp_path, store, detector
):
    challenge = thread("901", "I'm up for a cage match if he is lol", "2026-11-06T10:00:00+0000")
    responses.get(MY_THREADS, json=page(challenge))
    pipeline = Pipeline(store, detector, {"threads": make_source(tmp_path)}, [])
    first = pipeline.poll("threads", "me")
    second = pipeline.poll("threads", "me")
    assert (first.new_posts, first.new_hits) == (1, 1)
    assert (second.new_posts, second.new_hits) == (0, 0)
    (category,) = store.db.execute("SELECT category FROM hits WHERE post_key = 'threads:901'").fetchone()
    assert category == "challenge"


@responses.activate
def test_an_edited_threads_post_keeps_its_key_and_every_text(tmp_path, store, detector):
    responses.get(MY_THREADS, json=page(thread("951", "Im up for a cage mach", "2026-11-06T10:00:00+0000")))
    pipeline = Pipeline(store, detector, {"threads": make_source(tmp_path)}, [])
    pipeline.poll("threads", "me")
    edited = thread("951", "I'm up for a cage match", "2026-11-06T10:00:00+0000")
    responses.replace(responses.GET, MY_THREADS, json=page(edited))
    pipeline.poll("threads", "me")
    (text,) = store.db.execute("SELECT text FROM posts WHERE key = 'threads:951'").fetchone()
    versions = [r[0] for r in store.db.execute("SELECT text FROM post_versions ORDER BY version")]
    assert text == "I'm up for a cage match"
    assert versions == ["Im up for a cage mach", "I'm up for a cage match"]


@responses.activate
def test_source_health_shows_a_rate_limited_threads_feed_with_its_pause_and_last_success(
    tmp_path, store, detector
):
    responses.get(MY_THREADS, json=page(thread("961", "hi")))
    pipeline = Pipeline(store, detector, {"threads": make_source(tmp_path)}, [])
    pipeline.poll("threads", "me")
    responses.replace(responses.GET, MY_THREADS, status=429, json=graph_error(4, "Application request limit"))
    pipeline.poll("threads", "me")
    rows = store.report("source-health", account="threads:me")
    (row,) = [dict(zip(rows.columns, r, strict=True)) for r in rows.rows]
    assert row["feed"] == "me" and row["polls"] == 2 and row["errors"] == 1 and row["last_success"]
    assert "Threads rate limit reached" in row["last_error"] and "paused until" in row["last_error"]


THREADS_SETTINGS = """
[storage]
path = "{tmp}/r.db"

[matcher]
rules = "{rules}"

[detector]
model = "off"

[[sources]]
name = "threads"
type = "threads"
accounts = ["me", "zuck"]
"""


def test_check_config_lists_the_permissions_each_threads_feed_needs_without_asking_threads(
    write_config, capsys, monkeypatch
):
    monkeypatch.setenv("THREADS_ACCESS_TOKEN", SECRET)
    path = write_config(THREADS_SETTINGS.replace("{rules}", str(DEFAULT_RULES)))
    with responses.RequestsMock():  # any request would fail this test
        assert run_bot.main(["--config", str(path), "check-config"]) == 0
    out = capsys.readouterr()
    shown = json.loads(out.out)["sources"][0]
    assert shown["needs"] == {
        "me": ["threads_basic", "threads_read_replies"],
        "zuck": ["threads_basic", "threads_profile_discovery"],
    }
    assert SECRET not in out.out + out.err


@responses.activate
def test_check_config_online_asks_each_feed_once_and_names_the_permission_a_refusal_needs(
    write_config, capsys, monkeypatch
):
    monkeypatch.setenv("THREADS_ACCESS_TOKEN", SECRET)
    path = write_config(THREADS_SETTINGS.replace("{rules}", str(DEFAULT_RULES)))
    responses.get(REFRESH, status=400, json=graph_error(10, "token too young"))
    responses.get(MY_THREADS, json=page(thread("1", "hi")))
    responses.get(MY_REPLIES, json=page())
    responses.get(PROFILE_POSTS, status=400, json=graph_error(10, "Application does not have permission"))
    assert run_bot.main(["--config", str(path), "check-config", "--online"]) == 1
    err = capsys.readouterr().err
    assert "threads:me: ok" in err
    assert "threads:zuck: " in err and "needs threads_basic and threads_profile_discovery" in err
    assert SECRET not in err


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        ("", {}, "sources[0].token_env: the environment variable THREADS_ACCESS_TOKEN is not set"),
        ('accounts = ["zu ck"]\n', {"THREADS_ACCESS_TOKEN": SECRET}, "sources[0].accounts: 'zu ck' is not a"),
        (
            "first_poll_limit = 500\n",
            {"THREADS_ACCESS_TOKEN": SECRET},
            "sources[0].first_poll_limit: expected",
        ),
        ("replies = 1\n", {"THREADS_ACCESS_TOKEN": SECRET}, "sources[0].replies: expected true or false"),
    ],
)
def test_bad_threads_settings_are_refused_in_one_line_naming_the_key(
    write_config, capsys, monkeypatch, extra, env, message
):
    monkeypatch.delenv("THREADS_ACCESS_TOKEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = THREADS_SETTINGS.replace("{rules}", str(DEFAULT_RULES))
    if extra.startswith("accounts"):
        settings = settings.replace('accounts = ["me", "zuck"]\n', "")
    path = write_config(settings + extra)
    assert run_bot.main(["--config", str(path), "check-config"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ringside: error: {path}: ") and message in line
    assert SECRET not in line


@pytest.mark.parametrize("cursor", ["not json", '{"threads": "x"}', "[1]"])
@responses.activate
def test_a_cursor_that_cannot_be_read_starts_the_feed_again_instead_of_stopping_it(tmp_path, cursor, caplog):
    items = [thread(str(400 + i), f"post {i}", f"2026-11-0{i + 1}T10:00:00+0000") for i in range(2)]
    responses.get(MY_THREADS, json=page(*reversed(items)))
    fetch = make_source(tmp_path, first_poll_limit=2).fetch("me", cursor)
    assert [p.id for p in fetch.posts] == ["400", "401"]
    assert "is not a Threads cursor; polling as the first time" in caplog.text


@responses.activate
def test_metas_app_rate_limit_pauses_every_feed_of_the_source_not_only_the_one_refused(
    tmp_path, store, detector
):
    responses.get(MY_THREADS, status=429, json=graph_error(4, "Application request limit reached"))
    source = make_source(tmp_path, accounts=("me", "zuck", "mosseri"))
    pipeline = Pipeline(store, detector, {"threads": source}, [])
    assert pipeline.poll("threads", "me") is None
    for feed in ("zuck", "mosseri"):  # the same app and token: asking would only prolong Meta's throttle
        assert (
            store.feed_state("threads", feed).paused_until == store.feed_state("threads", "me").paused_until
        )
        assert pipeline.poll("threads", feed) is None
    assert len(responses.calls) == 1


@responses.activate
def test_a_gap_longer_than_a_polls_pages_is_read_to_the_bound_and_said_in_a_warning(tmp_path, caplog):
    responses.get(MY_THREADS, json=page(thread("302", "newest", "2026-11-06T10:00:00+0000"), after="again"))
    with caplog.at_level(logging.WARNING, logger="ringside.threads"):
        fetch = make_source(tmp_path).fetch("me", json.dumps({"threads": unix("2026-11-05T10:00:00Z")}))
    assert len(responses.calls) == 20 and fetch.read == 20
    assert "more than 20 posts since the last poll; older ones in this gap are not fetched" in caplog.text
