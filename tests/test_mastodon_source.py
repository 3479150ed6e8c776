"""The Mastodon source through Mastodon.py's real client, with answers recorded from real Mastodon servers
(tests/data/mastodon) served by `responses`."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import responses

from bot.pipeline import Pipeline
from bot.sources import RateLimited, SourceError, build_source
from bot.sources.mastodon import MastodonSource, make_client
from bot.timeutil import utcnow
from config.secrets import Secret
from config.settings import load_settings
from config.table import ConfigError

RECORDED = Path(__file__).parent / "data" / "mastodon"
INSTANCE = "mastodon.social"
API = f"https://{INSTANCE}/api/v1"
ACCOUNT = "mastodonpy_test@mastodon.social"
ACCOUNT_ID = "117020565966271181"  # the id in the recorded account_lookup.json
STATUSES = f"{API}/accounts/{ACCOUNT_ID}/statuses"
SECRET = "mastodon-test-access-token"


def recorded(name: str) -> list | dict:
    return json.loads((RECORDED / name).read_text(encoding="utf-8"))


def make_source(token: str | None = None, **kwargs) -> MastodonSource:
    client = make_client(INSTANCE, Secret(token, "MASTODON_SOCIAL_TOKEN") if token else None, 10.0)
    kwargs.setdefault("known_ids", {ACCOUNT: ACCOUNT_ID})
    return MastodonSource("mastodon", {INSTANCE: client}, [ACCOUNT], **kwargs)


def status(id: str, content: str, **fields) -> dict:
    """A recorded status (Toot number 9) with its id, content and any other fields replaced."""
    record = copy.deepcopy(recorded("account_statuses_page1.json")[0])
    return record | {"id": id, "content": content} | fields


def next_link(max_id: str) -> dict[str, str]:
    """The Link header Mastodon sends with a page that has older statuses after it (as recorded)."""
    return {
        "Link": f'<{STATUSES}?limit=5&max_id={max_id}>; rel="next", <{STATUSES}?limit=5&min_id=1>; rel="prev"'
    }


def query_of(call) -> dict[str, list[str]]:
    return parse_qs(urlparse(call.request.url).query)


# -- reading ----------------------------------------------------------------------------------------------


@responses.activate
def test_a_first_poll_looks_the_account_up_once_and_takes_only_the_first_poll_limit():
    responses.get(f"{API}/accounts/lookup", json=recorded("account_lookup.json"))
    responses.get(
        STATUSES, json=recorded("account_statuses_page1.json"), headers=next_link("117020580489281910")
    )
    source = make_source(first_poll_limit=3, known_ids={})
    first = source.fetch(ACCOUNT, None)
    second = source.fetch(ACCOUNT, None)
    assert first.accounts == (("mastodon", ACCOUNT, ACCOUNT_ID),) and second.accounts == ()
    assert query_of(responses.calls[0]) == {"acct": ["mastodonpy_test"]}
    assert query_of(responses.calls[1])["limit"] == ["3"]
    assert [c.request.url.split("?")[0] for c in responses.calls].count(f"{API}/accounts/lookup") == 1
    assert [p.text for p in first.posts] == ["Toot number 7!", "Toot number 8!", "Toot number 9!"]
    newest = first.posts[-1]
    assert newest.key == "mastodon:mastodon.social/117020580518794573"
    assert newest.url == "http://localhost:3000/@mastodonpy_test/117020580518794573"
    assert (newest.author, newest.lang, newest.kind) == (ACCOUNT, "en", "post")
    assert first.cursor == "117020580518794573"


@responses.activate
def test_an_account_the_instance_does_not_know_fails_with_its_name():
    responses.get(f"{API}/accounts/lookup", status=404, json=recorded("account_lookup_404.json"))
    with pytest.raises(SourceError, match=r"no Mastodon account named @mastodonpy_test@mastodon\.social"):
        make_source(known_ids={}).fetch(ACCOUNT, None)


@responses.activate
def test_a_later_poll_pages_back_with_max_id_until_it_reaches_the_cursor():
    responses.get(
        STATUSES, json=recorded("account_statuses_page1.json"), headers=next_link("117020580489281910")
    )
    responses.get(
        STATUSES, json=recorded("account_statuses_page2.json"), headers=next_link("117020580452511285")
    )
    fetch = make_source().fetch(ACCOUNT, "117020580474454464")  # Toot number 3, in the second page
    assert [p.text for p in fetch.posts] == [f"Toot number {n}!" for n in range(4, 10)]
    first, second = (query_of(c) for c in responses.calls)
    assert first == {"limit": ["40"]}
    assert second == {"limit": ["40"], "max_id": ["117020580489281910"]}
    assert fetch.cursor == "117020580518794573" and fetch.read == 10


@responses.activate
def test_a_poll_with_nothing_new_returns_no_posts_and_keeps_the_cursor():
    responses.get(STATUSES, json=recorded("account_statuses_page1.json"))
    fetch = make_source().fetch(ACCOUNT, "117020580518794573")
    assert fetch.posts == () and fetch.cursor == "117020580518794573"
    assert len(responses.calls) == 1


@responses.activate
def test_html_content_becomes_the_plain_text_a_rule_can_read():
    content = (
        "<p>I&#39;m up for a cage match if he is lol<br>seriously &amp; truly</p>"
        '<p><span class="h-card"><a href="https://meta.social/@zuck" class="u-url mention">@<span>zuck</span>'
        '</a></span> <a href="https://mastodon.social/tags/mma" class="mention hashtag">'
        "#<span>mma</span></a> "
        '<a href="https://example.com/fight"><span class="invisible">https://</span>'
        '<span class="">example.com/fight</span><span class="invisible"></span></a></p>'
    )
    responses.get(STATUSES, json=[status("9", content)])
    (post,) = make_source().fetch(ACCOUNT, None).posts
    assert post.text == (
        "I'm up for a cage match if he is lol\nseriously & truly\n\n@zuck #mma https://example.com/fight"
    )


@responses.activate
def test_a_quote_fallback_left_open_and_a_script_do_not_reach_the_text():
    content = (
        '<p class="quote-inline">RE: <a href="https://mastodon.social/@a/1">mastodon.social/@a/1</p>'
        "<p>Fight&nbsp;me<script>alert(1)</script></p><div>any time</div><h1>anywhere</h1>"
    )
    responses.get(STATUSES, json=[status("9", content)])
    (post,) = make_source().fetch(ACCOUNT, None).posts
    assert post.text == "Fight me\n\nany time\n\nanywhere"


@responses.activate
def test_a_content_warning_comes_before_the_body():
    responses.get(STATUSES, json=[recorded("status_content_warning.json")])
    (post,) = make_source().fetch(ACCOUNT, None).posts
    assert post.text == "Content warning\n\nToot!"


@responses.activate
def test_a_reply_names_the_status_it_answers_and_who_it_mentions():
    responses.get(STATUSES, json=[recorded("status_reply.json")])
    (post,) = make_source().fetch(ACCOUNT, None).posts
    assert (post.kind, post.reply_to) == ("reply", "mastodon.social/117020583245459824")
    assert post.mentions == ("mastodonpy_test_2@mastodon.social",)
    assert post.text == "@mastodonpy_test_2 same!"
    assert post.author == "admin@mastodon.social"


@responses.activate
def test_a_quote_names_the_quoted_status_and_drops_the_re_link_kept_for_old_clients():
    responses.get(STATUSES, json=[recorded("status_quote.json")])
    (post,) = make_source().fetch(ACCOUNT, None).posts
    assert (post.kind, post.quote_of) == ("quote", "mastodon.social/117020582917124092")
    assert post.text == "yoooooooo"


@responses.activate
def test_a_reblog_is_a_repost_with_the_original_text_and_author():
    responses.get(STATUSES, json=[recorded("status_reblog.json")])
    (post,) = make_source().fetch(ACCOUNT, None).posts
    assert (post.kind, post.quote_of) == ("repost", "mastodon.social/117020574416668515")
    assert post.key == "mastodon:mastodon.social/117020574424543529"
    assert post.text == "RT @mastodonpy_test@mastodon.social: Toot!"
    assert post.author == ACCOUNT and post.mentions == (ACCOUNT,)
    assert post.url == "http://localhost:3000/@mastodonpy_test/117020574416668515"


@responses.activate
def test_an_edit_read_again_below_the_cursor_is_the_same_post_with_its_new_text():
    edited = recorded("status_edited.json")
    responses.get(STATUSES, json=[status("117020586180926939", "<p>newer</p>"), edited])
    fetch = make_source().fetch(ACCOUNT, edited["id"])
    assert [p.text for p in fetch.posts] == [
        "the best editor? why, of course it is the KDE Advanced Text Editor, Kate",
        "newer",
    ]
    assert fetch.posts[0].key == f"mastodon:mastodon.social/{edited['id']}"
    assert fetch.posts[0].version_id == "2026-08-01T13:54:00.695000+00:00"
    assert fetch.cursor == "117020586180926939"


@responses.activate
def test_a_status_without_id_is_rejected_and_one_missing_optional_fields_is_kept():
    bare = {"id": "12", "created_at": "2026-08-01T13:54:00.695Z", "content": "<p>still here</p>"}
    broken = status("13", "<p>no id</p>")
    del broken["id"]
    responses.get(STATUSES, json=[broken, bare])
    fetch = make_source().fetch(ACCOUNT, None)
    (post,) = fetch.posts
    assert (post.text, post.author, post.url, post.lang, post.mentions) == (
        "still here",
        ACCOUNT,
        None,
        None,
        (),
    )
    (rejected,) = fetch.rejected
    assert rejected.error == "field 'id' must be a status id, got None"
    assert fetch.cursor == "12"


# -- failures ---------------------------------------------------------------------------------------------


def in_an_hour() -> datetime:
    return (utcnow() + timedelta(hours=1)).replace(microsecond=0)


def header_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@responses.activate
def test_a_429_pauses_the_feed_until_the_instances_reset_time():
    reset = in_an_hour()
    responses.get(
        STATUSES,
        status=429,
        headers={"X-RateLimit-Reset": header_time(reset), "X-RateLimit-Remaining": "0"},
        json={"error": "Too many requests"},
    )
    with pytest.raises(RateLimited, match="429") as raised:
        make_source().fetch(ACCOUNT, "1")
    assert raised.value.reset_at == reset
    assert len(responses.calls) == 1  # "throw": the client never sleeps and retries


@responses.activate
def test_a_reset_years_away_pauses_the_feed_for_a_day_at_most():
    responses.get(STATUSES, status=429, headers={"X-RateLimit-Reset": "2100-01-01T00:00:00.000Z"}, json={})
    with pytest.raises(RateLimited) as raised:
        make_source().fetch(ACCOUNT, "1")
    assert raised.value.reset_at <= utcnow() + timedelta(hours=24)


@responses.activate
def test_a_refused_token_fails_with_a_message_that_never_shows_it():
    responses.get(STATUSES, status=401, json=recorded("unauthorized_401.json"))
    with pytest.raises(SourceError, match=r"401 Unauthorized\); check the access token") as raised:
        make_source(token=SECRET).fetch(ACCOUNT, None)
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in str(raised.value)


@responses.activate
def test_a_forbidden_answer_fails_with_its_status():
    responses.get(STATUSES, status=403, json={"error": "This action is not allowed"})
    with pytest.raises(SourceError, match=r"^mastodon\.social: the instance answered 403: Forbidden$"):
        make_source().fetch(ACCOUNT, None)


@responses.activate
def test_a_server_error_fails_only_this_poll():
    responses.get(STATUSES, status=502, body="<html>Bad Gateway</html>")
    with pytest.raises(SourceError, match=r"server error \(502\)"):
        make_source().fetch(ACCOUNT, None)


@responses.activate
@pytest.mark.parametrize("body", ["<html>not json</html>", '{"error": "an object where a list belongs"}'])
def test_a_body_that_is_not_a_list_of_statuses_fails_the_poll_with_a_clear_message(body):
    responses.get(STATUSES, body=body, content_type="application/json")
    with pytest.raises(SourceError, match=r"^mastodon\.social: "):
        make_source().fetch(ACCOUNT, None)


# -- settings and wiring ----------------------------------------------------------------------------------

MASTODON_SETTINGS = """
[storage]
path = "{tmp}/ringside.db"

[[sources]]
name = "fedi"
type = "mastodon"
accounts = ["@Gargron@mastodon.social", "someone@hachyderm.io"]
first_poll_limit = 5
{extra}

[[channels]]
name = "console"
type = "console"
"""


def test_settings_read_accounts_and_a_token_per_instance_from_the_environment(write_config):
    extra = 'tokens = { "mastodon.social" = "MASTODON_SOCIAL_TOKEN" }'
    path = write_config(MASTODON_SETTINGS.replace("{extra}", extra))
    settings = load_settings(path, environ={"MASTODON_SOCIAL_TOKEN": SECRET})
    (source,) = settings.sources
    assert source.options["accounts"] == ("Gargron@mastodon.social", "someone@hachyderm.io")
    assert source.secrets["token:mastodon.social"].reveal() == SECRET
    shown = json.dumps(settings.masked())
    assert SECRET not in shown and "$MASTODON_SOCIAL_TOKEN (set, ****)" in shown
    built = build_source(source, {})
    assert built.feeds() == ["gargron@mastodon.social", "someone@hachyderm.io"]
    assert built.clients["mastodon.social"].access_token == SECRET
    assert built.clients["hachyderm.io"].access_token is None
    assert built.clients["mastodon.social"].ratelimit_method == "throw"


@pytest.mark.parametrize(
    ("extra", "accounts", "message"),
    [
        ("", '["Gargron"]', "accounts: 'Gargron' is not a Mastodon account such as Gargron@mastodon.social"),
        (
            'tokens = { "mastodon.social" = "MASTODON_SOCIAL_TOKEN" }',
            '["Gargron@mastodon.social"]',
            "tokens.mastodon.social: the environment variable MASTODON_SOCIAL_TOKEN is not set",
        ),
        (
            'tokens = { "mastodon.online" = "MASTODON_ONLINE_TOKEN" }',
            '["Gargron@mastodon.social"]',
            "tokens.mastodon.online: no account in `accounts` is on this instance",
        ),
    ],
)
def test_bad_mastodon_settings_fail_with_one_line_naming_the_key(write_config, extra, accounts, message):
    text = MASTODON_SETTINGS.replace("{extra}", extra)
    text = text.replace('["@Gargron@mastodon.social", "someone@hachyderm.io"]', accounts)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as raised:
        load_settings(write_config(text), environ={})
    assert "\n" not in str(raised.value) and "sources[0]." in str(raised.value)


# -- through the pipeline ---------------------------------------------------------------------------------


@responses.activate
def test_a_mastodon_challenge_is_stored_as_a_hit(store, detector):
    content = "<p>I&#39;m up for a cage match if he is lol</p>"
    responses.get(STATUSES, json=[status("117020586180926950", content)])
    saved = Pipeline(store, detector, {"fedi": make_source()}, []).poll("fedi", ACCOUNT)
    assert saved is not None and saved.new_posts == 1 and saved.new_hits >= 1
    hits = store.report("latest-hits").rows
    assert any("cage match" in str(row) for row in hits)
    assert store.feed_state("fedi", ACCOUNT).cursor == "117020586180926950"


@responses.activate
def test_an_edit_polled_again_becomes_a_second_version_of_the_same_post(store, detector):
    first = status("500", "<p>hello</p>")
    responses.get(STATUSES, json=[first])
    responses.get(
        STATUSES, json=[first | {"content": "<p>hello again</p>", "edited_at": "2026-08-02T00:00:00Z"}]
    )
    pipeline = Pipeline(store, detector, {"fedi": make_source()}, [])
    pipeline.poll("fedi", ACCOUNT)
    again = pipeline.poll("fedi", ACCOUNT)
    assert again is not None and again.new_posts == 0
    texts = store.db.execute(
        "SELECT text FROM post_versions WHERE post_key = 'mastodon:mastodon.social/500' ORDER BY version"
    ).fetchall()
    assert texts == [("hello",), ("hello again",)]


@responses.activate
def test_source_health_shows_a_mastodon_feeds_last_success_and_its_rate_limit(store, detector):
    responses.get(STATUSES, json=[status("600", "<p>hi</p>")])
    reset = in_an_hour()
    responses.get(STATUSES, status=429, headers={"X-RateLimit-Reset": header_time(reset)}, json={})
    pipeline = Pipeline(store, detector, {"fedi": make_source()}, [])
    pipeline.poll("fedi", ACCOUNT)
    assert pipeline.poll("fedi", ACCOUNT) is None
    report = store.report("source-health", account=f"mastodon:{ACCOUNT}")
    (row,) = [dict(zip(report.columns, r, strict=True)) for r in report.rows]
    assert (row["source"], row["feed"], row["polls"], row["errors"]) == ("fedi", ACCOUNT, 2, 1)
    assert row["last_success"] is not None
    assert "429" in row["last_error"] and reset.strftime("%Y-%m-%dT%H:%M:%S") in row["last_error"]
    assert store.feed_state("fedi", ACCOUNT).paused_until == reset
    assert pipeline.poll("fedi", ACCOUNT) is None and len(responses.calls) == 2


@responses.activate
def test_a_failing_instance_stops_only_its_own_account_and_a_bad_status_is_quarantined(store, detector):
    other = "someone@hachyderm.io"
    responses.get("https://hachyderm.io/api/v1/accounts/42/statuses", status=503, body="down")
    broken = status("701", "<p>no time</p>") | {"created_at": None}
    responses.get(STATUSES, json=[status("702", "<p>fine</p>"), broken])
    clients = {host: make_client(host, None, 10.0) for host in (INSTANCE, "hachyderm.io")}
    source = MastodonSource("fedi", clients, [other, ACCOUNT], known_ids={ACCOUNT: ACCOUNT_ID, other: "42"})
    pipeline = Pipeline(store, detector, {"fedi": source}, [])
    failed, polled = (pipeline.poll(name, feed) for name, feed in pipeline.feeds())
    assert failed is None and polled is not None and polled.new_posts == 1
    assert store.feed_state("fedi", ACCOUNT).cursor == "702"
    assert store.db.execute("SELECT text FROM posts").fetchall() == [("fine",)]
    (reason,) = store.db.execute("SELECT error FROM quarantine").fetchone()
    assert reason == "field 'created_at' must be a time, got None"
    assert "503" in store.db.execute("SELECT error FROM runs WHERE feed = ?", [other]).fetchone()[0]
