"""The Instagram source through its real requests session, with Graph API answers served by `responses`."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import responses

import run_bot
from bot.pipeline import Pipeline
from bot.sources import RateLimited, SourceError
from bot.sources.graph import GraphClient
from bot.sources.instagram import API, InstagramSource
from bot.timeutil import parse_datetime, utcnow
from config import DEFAULT_RULES

RECORDED = Path(__file__).parent / "data" / "instagram"
OPERATOR = "17841405309211844"
DISCOVERY = f"{API}/v24.0/{OPERATOR}"
SECRET = "EAAG-test-instagram-token-0123456789"


def media(id: str, caption: str | None, timestamp: str, **fields) -> dict:
    item = {
        "id": id,
        "timestamp": timestamp,
        "permalink": f"https://www.instagram.com/p/{id}/",
        "media_type": "IMAGE",
        "username": "bluebottle",
        **fields,
    }
    if caption is not None:
        item["caption"] = caption
    return item


def discovered(*items: dict, after: str | None = None) -> dict:
    """An answer in the documented shape: the watched account's media under business_discovery."""
    media_edge: dict = {"data": list(items)}
    if after:
        media_edge["paging"] = {"cursors": {"before": "QkVGT1JF", "after": after}}
    return {
        "business_discovery": {"username": "bluebottle", "media": media_edge, "id": "17841401441775531"},
        "id": OPERATOR,
    }


def graph_error(code: int, message: str = "An error", subcode: int | None = None) -> dict:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "A1b2C3"}
    if subcode:
        error["error_subcode"] = subcode
    return {"error": error}


def make_source(**kwargs) -> InstagramSource:
    client = GraphClient(f"{API}/v24.0", "Instagram", "INSTAGRAM_ACCESS_TOKEN", 5.0, None)
    return InstagramSource("instagram", client, SECRET, OPERATOR, ["bluebottle"], **kwargs)


def fields_of(call) -> str:
    return parse_qs(urlparse(call.request.url).query)["fields"][0]


def cursor_at(newest: str, *ids: str) -> str:
    return json.dumps({"newest": newest, "ids": list(ids)})


def where(cursor: str | None) -> tuple[datetime, list[str]]:
    """A cursor's newest time and the ids seen at it."""
    assert cursor is not None
    loaded = json.loads(cursor)
    return parse_datetime(loaded["newest"]), loaded["ids"]


def at(moment: str) -> datetime:
    return parse_datetime(moment)


@responses.activate
def test_the_documented_answer_becomes_posts_with_captions_authors_and_permalinks():
    responses.get(
        DISCOVERY, json=json.loads((RECORDED / "business_discovery.json").read_text(encoding="utf-8"))
    )
    fetch = make_source().fetch("bluebottle", None)
    newer = fetch.posts[-1]
    assert [p.key for p in fetch.posts] == ["instagram:17895695668004550", "instagram:17990014702890528"]
    assert (newer.author, newer.url) == ("bluebottle", "https://www.instagram.com/p/C7xAAAAAAAA/")
    assert newer.mentions == ("blueprintcoffee",) and newer.kind == "post"
    assert where(fetch.cursor) == (at("2026-06-02T16:01:55Z"), ["17990014702890528"])


@responses.activate
def test_the_first_poll_asks_for_one_page_of_the_first_poll_limit_through_the_operators_account():
    items = [media(str(200 + i), f"m {i}", f"2026-11-0{i + 1}T10:00:00+0000") for i in range(5)]
    responses.get(DISCOVERY, json=discovered(*reversed(items), after="QUZURVI="))
    fetch = make_source(first_poll_limit=3).fetch("bluebottle", None)
    assert [p.id for p in fetch.posts] == ["202", "203", "204"]
    assert len(responses.calls) == 1
    assert fields_of(responses.calls[0]) == (
        "business_discovery.username(bluebottle){username,media.limit(3)"
        "{caption,timestamp,permalink,id,media_type,username}}"
    )
    assert parse_qs(urlparse(responses.calls[0].request.url).query)["access_token"] == [SECRET]


@responses.activate
def test_the_next_poll_pages_with_the_media_cursor_until_it_reaches_what_it_had_seen():
    responses.get(
        DISCOVERY,
        json=discovered(
            media("303", "newest", "2026-11-08T10:00:00+0000"),
            media("302", "newer", "2026-11-07T10:00:00+0000"),
            after="UDI=",
        ),
    )
    responses.get(
        DISCOVERY,
        json=discovered(
            media("301", "new", "2026-11-06T10:00:00+0000"),
            media("300", "seen", "2026-11-05T10:00:00+0000"),
            after="UDM=",
        ),
    )
    fetch = make_source().fetch("bluebottle", cursor_at("2026-11-05T10:00:00Z", "300"))
    assert [p.id for p in fetch.posts] == ["301", "302", "303"]
    assert len(responses.calls) == 2  # the second page reached media 300: no third page
    assert "media.after(UDI=).limit(50)" in fields_of(responses.calls[1])
    assert where(fetch.cursor) == (at("2026-11-08T10:00:00Z"), ["303"])


@responses.activate
def test_nothing_new_stores_nothing_and_keeps_the_cursor():
    responses.get(DISCOVERY, json=discovered(media("300", "seen", "2026-11-05T10:00:00+0000")))
    cursor = cursor_at("2026-11-05T10:00:00Z", "300")
    fetch = make_source().fetch("bluebottle", cursor)
    assert fetch.posts == () and where(fetch.cursor) == (at("2026-11-05T10:00:00Z"), ["300"])


@responses.activate
def test_media_posted_in_the_same_second_as_the_newest_seen_is_still_new():
    responses.get(
        DISCOVERY,
        json=discovered(
            media("401", "same second", "2026-11-05T10:00:00+0000"),
            media("400", "seen", "2026-11-05T10:00:00+0000"),
        ),
    )
    fetch = make_source().fetch("bluebottle", cursor_at("2026-11-05T10:00:00Z", "400"))
    assert [p.id for p in fetch.posts] == ["401"]
    assert where(fetch.cursor) == (at("2026-11-05T10:00:00Z"), ["400", "401"])


@responses.activate
def test_media_without_a_time_is_quarantined_and_media_without_a_caption_is_kept():
    broken = media("501", "no time", "2026-11-06T10:00:00+0000")
    del broken["timestamp"]
    responses.get(
        DISCOVERY, json=discovered(broken, media("502", None, "2026-11-06T11:00:00+0000", username=None))
    )
    fetch = make_source().fetch("bluebottle", cursor_at("2026-11-05T10:00:00Z", "300"))
    (post,) = fetch.posts
    assert (post.id, post.text, post.author) == ("502", "", "bluebottle")
    (rejected,) = fetch.rejected
    assert rejected.record["id"] == "501" and "timestamp" in rejected.error


@responses.activate
def test_media_dated_in_the_future_is_quarantined_and_does_not_move_the_cursor():
    responses.get(DISCOVERY, json=discovered(media("511", "from 2099", "2099-01-01T00:00:00+0000")))
    fetch = make_source().fetch("bluebottle", cursor_at("2026-11-05T10:00:00Z", "300"))
    assert fetch.posts == () and len(fetch.rejected) == 1
    assert where(fetch.cursor) == (at("2026-11-05T10:00:00Z"), ["300"])


@responses.activate
def test_an_account_with_no_media_answers_without_a_media_edge_and_moves_nothing():
    responses.get(
        DISCOVERY, json={"business_discovery": {"username": "bluebottle", "id": "1"}, "id": OPERATOR}
    )
    fetch = make_source().fetch("bluebottle", None)
    assert fetch.posts == () and fetch.cursor is None


@responses.activate
def test_a_personal_or_unknown_account_is_named_in_the_failure():
    responses.get(
        DISCOVERY,
        status=400,
        json=graph_error(110, "Invalid user id", 2207013),
    )
    with pytest.raises(SourceError, match="no Instagram Business or Creator account named @bluebottle"):
        make_source().fetch("bluebottle", None)


@responses.activate
def test_a_429_pauses_the_feed_until_meta_says_access_comes_back():
    usage = {OPERATOR: [{"type": "INSTAGRAM", "call_count": 100, "estimated_time_to_regain_access": 30}]}
    responses.get(
        DISCOVERY,
        status=429,
        json=graph_error(80002, "too many calls"),
        headers={"X-Business-Use-Case-Usage": json.dumps(usage)},
    )
    before = utcnow()
    with pytest.raises(RateLimited) as error:
        make_source().fetch("bluebottle", None)
    assert before + timedelta(minutes=30) <= error.value.reset_at <= utcnow() + timedelta(minutes=30)


@responses.activate
def test_an_expired_token_names_the_variable_to_set_and_never_the_token():
    responses.get(DISCOVERY, status=400, json=graph_error(190, "Error validating access token"))
    with pytest.raises(SourceError) as error:
        make_source().fetch("bluebottle", None)
    assert "INSTAGRAM_ACCESS_TOKEN" in str(error.value) and SECRET not in str(error.value)


@responses.activate
def test_a_missing_permission_names_the_instagram_permissions_the_feed_needs():
    responses.get(DISCOVERY, status=403, json=graph_error(200, "Requires business_management permission"))
    with pytest.raises(
        SourceError, match="needs instagram_basic and pages_read_engagement and business_management"
    ):
        make_source().fetch("bluebottle", None)


@responses.activate
def test_a_5xx_and_a_body_that_is_not_json_are_failed_polls_that_say_so():
    responses.get(DISCOVERY, status=502, body="Bad Gateway")
    with pytest.raises(SourceError, match=r"Instagram server error \(502\)"):
        make_source().fetch("bluebottle", None)
    responses.replace(responses.GET, DISCOVERY, status=200, body="{not json")
    with pytest.raises(SourceError, match="not a JSON object"):
        make_source().fetch("bluebottle", None)
    responses.replace(responses.GET, DISCOVERY, json={"business_discovery": {"media": {"data": "x"}}})
    with pytest.raises(SourceError, match="without its 'data' list"):
        make_source().fetch("bluebottle", None)


@responses.activate
def test_a_challenge_on_instagram_is_stored_as_a_hit_through_the_pipeline(store, detector):
    challenge = media("601", "I'm up for a cage match if he is lol", "2026-11-06T10:00:00+0000")
    responses.get(DISCOVERY, json=discovered(challenge))
    pipeline = Pipeline(store, detector, {"instagram": make_source()}, [])
    first = pipeline.poll("instagram", "bluebottle")
    second = pipeline.poll("instagram", "bluebottle")
    assert (first.new_posts, first.new_hits) == (1, 1)
    assert (second.new_posts, second.new_hits) == (0, 0)
    rows = store.report("source-health", account="instagram:bluebottle")
    (row,) = [dict(zip(rows.columns, r, strict=True)) for r in rows.rows]
    assert (row["polls"], row["errors"], row["new_posts"]) == (2, 0, 1)


INSTAGRAM_SETTINGS = f"""
[storage]
path = "{{tmp}}/r.db"

[matcher]
rules = "{DEFAULT_RULES}"

[detector]
model = "off"

[[sources]]
name = "ig"
type = "instagram"
ig_user_id = "{OPERATOR}"
accounts = ["bluebottle"]
"""


@responses.activate
def test_check_config_online_says_which_permissions_a_refused_instagram_feed_needs(
    write_config, capsys, monkeypatch
):
    monkeypatch.setenv("INSTAGRAM_ACCESS_TOKEN", SECRET)
    path = write_config(INSTAGRAM_SETTINGS)
    responses.get(DISCOVERY, status=400, json=graph_error(10, "Application does not have permission"))
    assert run_bot.main(["--config", str(path), "check-config", "--online"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out)["sources"][0]["needs"] == {
        "bluebottle": ["instagram_basic", "pages_read_engagement", "business_management"]
    }
    assert "online: ig:bluebottle: refused:" in out.err and "needs instagram_basic" in out.err
    assert SECRET not in out.out + out.err


@pytest.mark.parametrize(
    ("settings", "env", "message"),
    [
        (
            INSTAGRAM_SETTINGS,
            {},
            "sources[0].token_env: the environment variable INSTAGRAM_ACCESS_TOKEN is not",
        ),
        (
            INSTAGRAM_SETTINGS.replace(OPERATOR, "me"),
            {"INSTAGRAM_ACCESS_TOKEN": SECRET},
            "sources[0].ig_user_id: expected the numeric id of your Instagram professional account, got 'me'",
        ),
        (
            INSTAGRAM_SETTINGS.replace(f'ig_user_id = "{OPERATOR}"\n', ""),
            {"INSTAGRAM_ACCESS_TOKEN": SECRET},
            "sources[0].ig_user_id: missing; expected a string",
        ),
        (
            INSTAGRAM_SETTINGS + 'api_version = "24"\n',
            {"INSTAGRAM_ACCESS_TOKEN": SECRET},
            "sources[0].api_version: expected a Graph API version such as v24.0, got '24'",
        ),
        (
            INSTAGRAM_SETTINGS.replace('["bluebottle"]', "[]"),
            {"INSTAGRAM_ACCESS_TOKEN": SECRET},
            "sources[0].accounts: expected at least one account name",
        ),
    ],
)
def test_bad_instagram_settings_are_refused_in_one_line_naming_the_key(
    write_config, capsys, monkeypatch, settings, env, message
):
    monkeypatch.delenv("INSTAGRAM_ACCESS_TOKEN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = write_config(settings)
    assert run_bot.main(["--config", str(path), "check-config"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ringside: error: {path}: ") and message in line


@pytest.mark.parametrize("cursor", ["not json", '{"newest": 5}', "[]"])
@responses.activate
def test_a_cursor_that_cannot_be_read_starts_the_feed_again_instead_of_stopping_it(cursor, caplog):
    items = [media(str(300 + i), f"m {i}", f"2026-11-0{i + 1}T10:00:00+0000") for i in range(2)]
    responses.get(DISCOVERY, json=discovered(*reversed(items)))
    fetch = make_source(first_poll_limit=2).fetch("bluebottle", cursor)
    assert [p.id for p in fetch.posts] == ["300", "301"]  # a first poll's worth, not an error every poll
    assert "is not an Instagram cursor; polling as the first time" in caplog.text


@responses.activate
def test_a_gap_longer_than_a_polls_pages_is_read_to_the_bound_and_said_in_a_warning(caplog):
    endless = discovered(media("303", "newer", "2026-11-08T10:00:00+0000"), after="UDI=")
    responses.get(DISCOVERY, json=endless)
    with caplog.at_level("WARNING", logger="ringside.instagram"):
        make_source().fetch("bluebottle", cursor_at("2026-11-05T10:00:00Z", "300"))
    assert len(responses.calls) == 20
    assert "bluebottle: more than 20 media since the last poll" in caplog.text
