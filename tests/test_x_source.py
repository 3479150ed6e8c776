"""The X source through tweepy's real Client, with X API v2 answers served by `responses`."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import responses
import tweepy

from bot.detect.detector import Detector
from bot.detect.matcher import Matcher
from bot.models import Fetch
from bot.pipeline import Pipeline
from bot.sources import RateLimited, SourceError
from bot.sources.x import MAX_QUERY, XSource, batch_accounts
from storage import Store
from tests.xapi import API, USERS, timeline, tweet, users_found

TIMELINE = f"{API}/users/{USERS['elonmusk']}/tweets"
SEARCH = f"{API}/tweets/search/recent"
RECORDED = Path(__file__).parent / "data" / "x"
SECRET = "AAAA-test-bearer-token"


def make_source(**kwargs) -> XSource:
    client = tweepy.Client(bearer_token=SECRET, return_type=dict, wait_on_rate_limit=False)
    kwargs.setdefault("known_ids", {"elonmusk": USERS["elonmusk"]})
    return XSource("x", client, kwargs.pop("accounts", ["elonmusk"]), **kwargs)


def query_of(call) -> dict[str, list[str]]:
    return parse_qs(urlparse(call.request.url).query)


@responses.activate
def test_a_timeline_becomes_posts_with_their_author_handle_and_link():
    responses.get(TIMELINE, json=timeline(tweet("200", "I'm up for a cage match if he is lol")))
    fetch = make_source().fetch("elonmusk", None)
    (post,) = fetch.posts
    assert (post.key, post.author, post.author_id) == ("x:200", "elonmusk", USERS["elonmusk"])
    assert post.url == "https://x.com/elonmusk/status/200"
    assert post.text == "I'm up for a cage match if he is lol"
    assert fetch.cursor == "200" and fetch.read == 1
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {SECRET}"
    asked = query_of(responses.calls[0])
    assert "note_tweet" in asked["tweet.fields"][0] and "referenced_tweets.id" in asked["expansions"][0]


@responses.activate
def test_usernames_are_resolved_once_and_handed_back_to_be_stored():
    responses.get(f"{API}/users/by", json=users_found("elonmusk"))
    responses.get(TIMELINE, json=timeline())
    source = make_source(known_ids={})
    first = source.fetch("elonmusk", None)
    second = source.fetch("elonmusk", None)
    assert first.accounts == (("x", "elonmusk", USERS["elonmusk"]),)
    assert second.accounts == ()
    assert [c.request.url.split("?")[0] for c in responses.calls].count(f"{API}/users/by") == 1


@responses.activate
def test_an_account_that_does_not_exist_fails_with_its_name():
    responses.get(
        f"{API}/users/by", json={"errors": [{"detail": "Could not find user with usernames: [nobody]."}]}
    )
    with pytest.raises(SourceError, match="no X account named @nobody"):
        make_source(accounts=["nobody"], known_ids={}).fetch("nobody", None)


@responses.activate
def test_the_next_poll_sends_since_id_and_follows_next_token_until_caught_up():
    responses.get(TIMELINE, json=timeline(tweet("305", "newest"), tweet("304", "b"), next_token="p2"))
    responses.get(TIMELINE, json=timeline(tweet("302", "c"), tweet("301", "oldest")))
    fetch = make_source().fetch("elonmusk", "300")
    assert [p.id for p in fetch.posts] == ["301", "302", "304", "305"]
    assert fetch.cursor == "305" and fetch.read == 4
    first, second = (query_of(c) for c in responses.calls)
    assert first["since_id"] == ["300"] and "pagination_token" not in first
    assert second["since_id"] == ["300"] and second["pagination_token"] == ["p2"]


@responses.activate
def test_the_first_poll_of_an_account_takes_only_its_newest_posts():
    responses.get(
        TIMELINE, json=timeline(*[tweet(str(400 - i), f"post {i}") for i in range(5)], next_token="more")
    )
    fetch = make_source(first_poll_limit=3).fetch("elonmusk", None)
    assert [p.id for p in fetch.posts] == ["398", "399", "400"]
    assert fetch.cursor == "400"
    assert len(responses.calls) == 1
    assert query_of(responses.calls[0])["max_results"] == ["5"]  # X's minimum for this endpoint


@responses.activate
def test_an_empty_answer_without_data_moves_nothing():
    responses.get(TIMELINE, json={"meta": {"result_count": 0}})
    fetch = make_source().fetch("elonmusk", "300")
    assert fetch.posts == () and fetch.cursor == "300" and fetch.read == 0


@responses.activate
def test_a_429_pauses_the_feed_until_xs_reset_time():
    reset = int(time.time()) + 600
    responses.get(
        TIMELINE, status=429, json={"title": "Too Many Requests"}, headers={"x-rate-limit-reset": str(reset)}
    )
    with pytest.raises(RateLimited) as error:
        make_source().fetch("elonmusk", "300")
    assert int(error.value.reset_at.timestamp()) == reset


@responses.activate
def test_a_401_says_the_token_was_refused_without_showing_it():
    responses.get(TIMELINE, status=401, json={"title": "Unauthorized", "detail": "Unauthorized"})
    with pytest.raises(SourceError) as error:
        make_source().fetch("elonmusk", "300")
    assert "401" in str(error.value) and "X_BEARER_TOKEN" in str(error.value)
    assert SECRET not in str(error.value)


@responses.activate
def test_a_503_is_a_failed_poll_to_retry_later():
    responses.get(TIMELINE, status=503, json={"title": "Service Unavailable"})
    with pytest.raises(SourceError, match=r"X server error \(503\)"):
        make_source().fetch("elonmusk", "300")


@responses.activate
def test_replies_quotes_and_reposts_know_their_kind_and_what_they_point_to():
    responses.get(
        TIMELINE,
        json=timeline(
            tweet(
                "501",
                "@finkd Vegas Octagon",
                referenced_tweets=[{"type": "replied_to", "id": "90"}],
                entities={"mentions": [{"start": 0, "end": 6, "username": "finkd"}]},
                in_reply_to_user_id="4",
            ),
            tweet("502", "lol this", referenced_tweets=[{"type": "quoted", "id": "91"}]),
            tweet(
                "503", "RT @finkd: Send Me Location", referenced_tweets=[{"type": "retweeted", "id": "92"}]
            ),
            tweet("504", "just a post"),
        ),
    )
    posts = {p.id: p for p in make_source().fetch("elonmusk", "500").posts}
    assert (posts["501"].kind, posts["501"].reply_to, posts["501"].mentions) == ("reply", "90", ("finkd",))
    assert (posts["502"].kind, posts["502"].quote_of) == ("quote", "91")
    assert (posts["503"].kind, posts["503"].quote_of) == ("repost", "92")
    assert (posts["504"].kind, posts["504"].reply_to, posts["504"].quote_of) == ("post", None, None)


@responses.activate
def test_an_edited_post_is_one_post_with_its_newest_text():
    original = tweet("601", "Im up for a cage mach", edit_history_tweet_ids=["601"])
    edited = tweet("602", "I'm up for a cage match", edit_history_tweet_ids=["601", "602"])
    responses.get(TIMELINE, json=timeline(edited, original))
    (post,) = make_source().fetch("elonmusk", "600").posts
    assert (post.id, post.version_id, post.text) == ("601", "602", "I'm up for a cage match")
    assert post.url == "https://x.com/elonmusk/status/601"


@responses.activate
def test_a_note_tweets_full_text_replaces_the_truncated_text():
    full = "Long post. " * 40 + "I'm up for a cage match if he is lol"
    responses.get(TIMELINE, json=timeline(tweet("701", full[:270] + "…", note_tweet={"text": full})))
    (post,) = make_source().fetch("elonmusk", "700").posts
    assert post.text == full


@responses.activate
def test_batched_accounts_are_polled_with_one_search_query_and_their_own_cursor():
    search = f"{API}/tweets/search/recent"
    responses.get(
        search,
        json=timeline(tweet("801", "hi"), tweet("802", "yo", author="finkd"), users=("elonmusk", "finkd")),
    )
    source = make_source(accounts=["elonmusk", "finkd"], batch=True)
    (feed,) = source.feeds()
    fetch = source.fetch(feed, "800")
    assert {p.author for p in fetch.posts} == {"elonmusk", "finkd"}
    assert fetch.cursor == "802"
    asked = query_of(responses.calls[0])
    assert asked["query"] == ["from:elonmusk OR from:finkd"] and asked["since_id"] == ["800"]


def test_batches_keep_every_query_within_512_characters():
    accounts = [f"account_{i:04d}" for i in range(200)]
    groups = batch_accounts(accounts)
    assert [a for g in groups for a in g] == accounts
    assert all(len(" OR ".join(f"from:{a}" for a in g)) <= MAX_QUERY for g in groups)
    # each query is 24 accounts of 21 characters with " OR ": as full as 512 allows
    assert [len(g) for g in groups] == [24] * 8 + [8]


@responses.activate
def test_a_batch_cursor_older_than_recent_search_reaches_starts_again_from_the_newest(caplog):
    search = f"{API}/tweets/search/recent"
    stale = {
        "errors": [
            {
                "parameters": {"since_id": ["800"]},
                "message": "Invalid 'since_id':'800'. 'since_id' must be a tweet id created after "
                "2026-11-19T10:00Z.",
            }
        ],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
    }
    responses.get(search, status=400, json=stale)
    responses.get(search, json=timeline(tweet("9001", "back again")))
    source = make_source(accounts=["elonmusk", "finkd"], batch=True)
    (feed,) = source.feeds()
    fetch = source.fetch(feed, "800")
    assert [p.id for p in fetch.posts] == ["9001"] and fetch.cursor == "9001"
    assert "since_id" not in query_of(responses.calls[1])
    assert "older than recent search reaches (7 days)" in caplog.text


@responses.activate
def test_any_other_400_is_a_failed_poll_that_names_xs_reason():
    responses.get(
        TIMELINE,
        status=400,
        json={
            "errors": [{"message": "The `max_results` query parameter value [1000] is not between 5 and 100"}]
        },
    )
    with pytest.raises(SourceError, match=r"X answered 400: The `max_results` query parameter"):
        make_source().fetch("elonmusk", "300")


BIRD = (
    "In 1986, Larry Bird told the Blazers he would play the whole game left-handed. He scored 47 points, "
    "then went back to his right hand for the Lakers two nights later. @celtics"
)


def repost_of_bird(original_id: str = "900") -> dict:
    """A repost as X serves it: its own text cut with "…", the whole original only in includes.tweets."""
    return tweet(
        "1001",
        ("RT @BleacherReport: " + BIRD)[:139] + "…",
        referenced_tweets=[{"type": "retweeted", "id": original_id}],
        entities={"mentions": [{"start": 3, "end": 18, "username": "BleacherReport", "id": "890891"}]},
    )


def bird_original(text: str = BIRD, **fields) -> dict:
    return tweet(
        "900",
        text,
        author="BleacherReport",
        created_at="2023-06-20T10:00:00.000Z",
        entities={"mentions": [{"start": 166, "end": 174, "username": "celtics", "id": "3"}]},
        **fields,
    )


@responses.activate
def test_a_repost_is_stored_with_the_full_text_of_the_post_it_reposts_and_its_own_attribution():
    responses.get(
        TIMELINE,
        json=timeline(repost_of_bird(), users=("elonmusk", "BleacherReport"), included=(bird_original(),)),
    )
    (post,) = make_source().fetch("elonmusk", "1000").posts
    assert post.text == "RT @BleacherReport: " + BIRD
    assert (post.key, post.author, post.kind, post.quote_of) == ("x:1001", "elonmusk", "repost", "900")
    assert post.created_at == datetime(2023, 6, 21, 2, 58, tzinfo=UTC)
    assert post.url == "https://x.com/elonmusk/status/1001"
    assert post.mentions == ("BleacherReport", "celtics")


@responses.activate
def test_a_repost_of_a_long_post_is_stored_with_the_originals_note_tweet():
    long_text = BIRD + " " + "He finished with 17 rebounds. " * 12
    original = bird_original(note_tweet={"text": long_text})
    responses.get(
        TIMELINE,
        json=timeline(repost_of_bird(), users=("elonmusk", "BleacherReport"), included=(original,)),
    )
    (post,) = make_source().fetch("elonmusk", "1000").posts
    assert post.text == "RT @BleacherReport: " + long_text


@responses.activate
def test_a_repost_whose_original_x_did_not_include_keeps_xs_cut_text():
    # X leaves a deleted or protected original out of includes.tweets (and says so in `errors`).
    cut = repost_of_bird(original_id="901")
    responses.get(TIMELINE, json=timeline(cut, users=("elonmusk",), included=(bird_original(),)))
    (post,) = make_source().fetch("elonmusk", "1000").posts
    assert post.text == cut["text"] and post.quote_of == "901"


@responses.activate
def test_a_quote_keeps_its_own_words_although_the_quoted_post_is_included():
    quote = tweet("1002", "lol this", referenced_tweets=[{"type": "quoted", "id": "900"}])
    responses.get(TIMELINE, json=timeline(quote, included=(bird_original(),)))
    (post,) = make_source().fetch("elonmusk", "1000").posts
    assert (post.text, post.kind, post.quote_of) == ("lol this", "quote", "900")


@responses.activate
def test_xs_escaped_ampersands_and_angle_brackets_are_stored_as_people_wrote_them():
    recorded = json.loads((RECORDED / "home_timeline.json").read_text(encoding="utf-8"))
    responses.get(TIMELINE, json=recorded)
    responses.get(TIMELINE, json={"meta": {"result_count": 0}})
    posts = {p.id: p.text for p in make_source().fetch("elonmusk", "1").posts}
    assert len(posts) == 98
    assert posts["1578095129495482369"].startswith("So @alanbenlee @snowman & I are testing")
    assert posts["1577678849445355527"] == "NYC < London (weather this week)"
    assert "edited Tweets -> https://t.co/DMtknKt2yZ" in posts["1577470977516400640"]
    assert not [text for text in posts.values() if "&amp;" in text or "&lt;" in text or "&gt;" in text]


@responses.activate
def test_an_escape_typed_by_a_person_is_unescaped_only_once():
    # X escapes every "&": someone who wrote "&amp;" is served "&amp;amp;" and must be read as "&amp;".
    responses.get(TIMELINE, json=timeline(tweet("1101", "write &amp;amp; for &amp; in HTML &lt;p&gt;")))
    (post,) = make_source().fetch("elonmusk", "1100").posts
    assert post.text == "write &amp; for & in HTML <p>"


@responses.activate
def test_the_escapes_of_a_reposted_original_and_of_a_note_tweet_are_undone_too():
    original = bird_original(text="Bird &amp; Magic", note_tweet={"text": "Bird &amp; Magic &lt;3 " * 20})
    note = tweet("1003", "cut…", note_tweet={"text": "Celtics &gt; Lakers " * 20})
    responses.get(
        TIMELINE,
        json=timeline(repost_of_bird(), note, users=("elonmusk", "BleacherReport"), included=(original,)),
    )
    posts = {p.id: p.text for p in make_source().fetch("elonmusk", "1000").posts}
    assert posts["1001"] == "RT @BleacherReport: " + "Bird & Magic <3 " * 20
    assert posts["1003"] == "Celtics > Lakers " * 20


@responses.activate
def test_a_batch_follows_search_pages_with_the_next_token_parameter_search_documents(caplog):
    responses.get(SEARCH, json=timeline(tweet("1202", "newer"), next_token="b2"))
    responses.get(SEARCH, json=timeline(tweet("1201", "older")))
    source = make_source(accounts=["elonmusk", "finkd"], batch=True)
    (feed,) = source.feeds()
    with caplog.at_level(logging.WARNING):
        fetch = source.fetch(feed, "1200")
    assert [p.id for p in fetch.posts] == ["1201", "1202"]
    second = query_of(responses.calls[1])
    assert second["next_token"] == ["b2"] and "pagination_token" not in second
    assert "Unexpected parameter" not in caplog.text


@responses.activate
def test_a_poll_that_reaches_its_page_bound_hands_out_a_batch_and_resumes_where_it_stopped():
    responses.get(TIMELINE, json=timeline(tweet("309", "newest"), tweet("308", "b"), next_token="p2"))
    responses.get(TIMELINE, json=timeline(tweet("306", "c"), tweet("305", "d"), next_token="p3"))
    responses.get(TIMELINE, json=timeline(tweet("303", "e"), tweet("302", "oldest new")))
    source = make_source(max_pages=2)
    first = source.fetch("elonmusk", "300")
    assert [p.id for p in first.posts] == ["305", "306", "308", "309"] and first.more
    second = source.fetch("elonmusk", first.cursor)
    assert [p.id for p in second.posts] == ["302", "303"] and not second.more
    assert second.cursor == "309"  # caught up: the newest post of the whole catch-up
    third_page = query_of(responses.calls[2])
    assert third_page["since_id"] == ["300"] and third_page["pagination_token"] == ["p3"]


@responses.activate
def test_a_catch_up_of_a_search_batch_goes_through_the_pipeline_one_transaction_per_batch(tmp_path):
    pages = [[str(1300 - 10 * page - n) for n in range(3)] for page in range(5)]
    for number, ids in enumerate(pages):
        token = f"b{number + 2}" if number < len(pages) - 1 else None
        responses.get(SEARCH, json=timeline(*[tweet(i, f"post {i}") for i in ids], next_token=token))
    source = make_source(accounts=["elonmusk", "zuck"], batch=True, max_pages=2)
    (feed,) = source.feeds()
    with Store.open(tmp_path / "r.db") as store:
        store.save_poll("x", feed, datetime.now(UTC), Fetch(posts=(), cursor="1200"), [], [])
        pipeline = Pipeline(store, Detector(Matcher([])), {"x": source}, [])
        saved = pipeline.poll_until_caught_up("x", feed)
        assert saved is not None and not saved.more
        assert store.counts()["posts"] == 15
        assert store.feed_state("x", feed).cursor == "1300"
    assert len(responses.calls) == 5  # each page read once


@responses.activate
def test_a_saved_page_token_x_refuses_skips_the_rest_of_the_catch_up_with_a_warning(caplog):
    refused = {"errors": [{"message": "The `next_token` query parameter value [p2] is not valid"}]}
    responses.get(TIMELINE, status=400, json=refused)
    saved = json.dumps({"since_id": "300", "next_token": "p2", "newest": "309"})
    with caplog.at_level(logging.WARNING):
        fetch = make_source().fetch("elonmusk", saved)
    assert fetch.posts == () and fetch.cursor == "309" and not fetch.more
    assert "posts older than 309 and newer than 300 are skipped" in caplog.text


@responses.activate
def test_a_page_that_fails_in_a_catch_up_keeps_the_pages_read_before_it_and_the_next_poll_resumes_there(
    caplog,
):
    responses.get(TIMELINE, json=timeline(tweet("309", "newest"), tweet("308", "b"), next_token="p2"))
    responses.get(TIMELINE, status=503, json={"title": "Service Unavailable"})
    responses.get(TIMELINE, json=timeline(tweet("306", "c"), tweet("305", "oldest new")))
    source = make_source()
    with caplog.at_level(logging.WARNING):
        first = source.fetch("elonmusk", "300")
    # X billed the first page: its posts are handed out (and enter the spend ledger), not read again.
    assert [p.id for p in first.posts] == ["308", "309"] and first.read_ids == ("309", "308")
    assert first.more and "X server error (503)" in caplog.text
    second = source.fetch("elonmusk", first.cursor)
    assert [p.id for p in second.posts] == ["305", "306"] and not second.more and second.cursor == "309"
    resumed = query_of(responses.calls[2])
    assert resumed["since_id"] == ["300"] and resumed["pagination_token"] == ["p2"]


@responses.activate
def test_a_429_on_the_first_page_of_a_poll_still_pauses_the_feed():
    responses.get(TIMELINE, json=timeline(tweet("309", "newest"), next_token="p2"))
    reset = int(time.time()) + 600
    responses.get(
        TIMELINE, status=429, json={"title": "Too Many Requests"}, headers={"x-rate-limit-reset": str(reset)}
    )
    source = make_source()
    first = source.fetch("elonmusk", "300")
    assert [p.id for p in first.posts] == ["309"] and first.more
    with pytest.raises(RateLimited):
        source.fetch("elonmusk", first.cursor)
