"""The RSS/Atom source through requests and feedparser, with the feeds' answers served by `responses`.

Le Monde's and The Verge's feeds in tests/data/rss/ are recorded answers (tests/data/rss/README.md says from
where); the small feeds built here exercise one case each."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import responses

import run_bot
from bot.detect.detector import Detector
from bot.pipeline import Pipeline
from bot.sources import RateLimited, SourceError, build_source
from bot.sources.rss import MAX_FEED_BYTES, RssSource
from bot.timeutil import utcnow
from config import load_settings
from tests.conftest import ROOT

RECORDED = Path(__file__).parent / "data" / "rss"
LE_MONDE = "https://www.lemonde.fr/international/rss_full.xml"
VERGE = "https://www.theverge.com/rss/index.xml"
FEED = "https://press.example/feed.xml"


def recorded(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


def rss(*items: str, extra: str = "") -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Actu Sport</title><link>https://press.example/</link>
<language>fr</language>{extra}{"".join(items)}</channel></rss>"""


def item(
    guid: str | None, title: str, text: str = "", date: str | None = "Wed, 21 Jun 2023 19:02:00 GMT"
) -> str:
    parts = [f"<title>{title}</title>", f"<description><![CDATA[{text}]]></description>"]
    if guid is not None:
        parts.append(f'<guid isPermaLink="false">{guid}</guid>')
    if date is not None:
        parts.append(f"<pubDate>{date}</pubDate>")
    return f"<item>{''.join(parts)}</item>"


def atom(*entries: str, links: str = "") -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:thr="http://purl.org/syndication/thread/1.0" xml:lang="en">
<title>Bridge</title><id>tag:bridge.example,2023:feed</id>{links}{"".join(entries)}</feed>"""


def entry(id: str, text: str, extra: str = "", updated: str = "2023-06-21T02:58:00Z") -> str:
    return (
        f"<entry><id>{id}</id><title>{text}</title><updated>{updated}</updated>"
        f"<author><name>elonmusk</name></author>{extra}</entry>"
    )


def source(*urls: str, **kwargs) -> RssSource:
    return RssSource("press", urls or (FEED,), **kwargs)


@responses.activate
def test_a_french_news_feed_first_poll_takes_only_the_newest_entries_as_posts():
    responses.get(LE_MONDE, body=recorded("lemonde-international.xml"), content_type="application/rss+xml")
    fetch = source(LE_MONDE, first_poll_limit=3).fetch(LE_MONDE, None)
    assert fetch.read == 20 and len(fetch.posts) == 3
    newest = fetch.posts[-1]
    assert newest.created_at == datetime(2024, 3, 27, 8, 0, 14, tzinfo=UTC)  # 09:00:14 +0100
    assert [p.created_at for p in fetch.posts] == sorted(p.created_at for p in fetch.posts)
    assert newest.text.startswith("« Les soldats de Louis XVI qui combattirent")
    assert "\n\nDeux chercheurs américains ont montré" in newest.text
    assert newest.url == newest.id.split("#")[0] and newest.url.startswith("https://www.lemonde.fr/idees/")
    assert (newest.platform, newest.lang, newest.kind) == ("rss", "fr", "post")
    assert newest.author == "International : Toute l’actualité sur Le Monde.fr."
    assert (
        len(json.loads(fetch.cursor)["seen"]) == 20
    )  # all of them seen: the next poll will not take the rest
    assert "Ringside/" in responses.calls[0].request.headers["User-Agent"]


@responses.activate
def test_an_atom_feed_keeps_each_author_and_reads_its_html_as_plain_text():
    responses.get(VERGE, body=recorded("theverge.atom.xml"), content_type="application/atom+xml")
    (post,) = source(VERGE, first_poll_limit=1).fetch(VERGE, None).posts
    assert (post.id, post.author, post.lang) == ("https://www.theverge.com/?p=695495", "Tina Nguyen", "en-US")
    assert post.url == "https://www.theverge.com/politics/695495/senate-drops-ai-moratorium-budget-bill"
    assert post.text.startswith("Senate drops plan to ban state AI laws\n\nThe US Senate has voted")
    assert "“big, beautiful bill.” Legislators" in post.text  # &#8221; decoded
    assert "<" not in post.text and "&#" not in post.text


@responses.activate
def test_paragraphs_and_line_breaks_are_kept_and_links_read_as_their_text():
    html = (
        '<p>Cage match?</p><p>Name the <a href="https://x.com/x">place</a>,<br>I&#8217;ll be there &amp; '
        "ready</p>"
    )
    responses.get(FEED, body=rss(item("a-1", "Défi", html)))
    (post,) = source().fetch(FEED, None).posts
    assert post.text == "Défi\n\nCage match?\n\nName the place,\nI’ll be there & ready"


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("&lt;p&gt;Cage match &amp;amp; more&lt;/p&gt;", "Cage match & more"),  # escaped HTML in CDATA
        ("<p>Use the &lt;p&gt; tag &amp;amp; more</p>", "Use the <p> tag &amp; more"),  # HTML about HTML
        ("Press &lt;Enter&gt; if x &lt; 3", "Press <Enter> if x < 3"),  # text with angle brackets
    ],
)
@responses.activate
def test_a_description_escaped_twice_reads_as_text_and_one_escaped_once_stays_as_written(
    description, expected
):
    responses.get(FEED, body=rss(item("a-1", "Défi", description)))
    (post,) = source().fetch(FEED, None).posts
    assert post.text == f"Défi\n\n{expected}"


@responses.activate
def test_an_unchanged_feed_costs_one_304_and_stores_nothing():
    responses.get(
        FEED,
        body=rss(item("a-1", "Un")),
        headers={"ETag": '"v1"', "Last-Modified": "Wed, 21 Jun 2023 19:02:00 GMT"},
    )
    first = source().fetch(FEED, None)
    responses.replace(responses.GET, FEED, status=304)
    second = source().fetch(FEED, first.cursor)
    assert second.posts == () and second.cursor == first.cursor
    asked = responses.calls[1].request.headers
    assert (asked["If-None-Match"], asked["If-Modified-Since"]) == ('"v1"', "Wed, 21 Jun 2023 19:02:00 GMT")


@responses.activate
def test_entries_seen_before_are_not_returned_again_when_the_feed_reorders_and_has_no_dates(caplog):
    responses.get(FEED, body=rss(item("a-1", "Un", date=None), item("a-2", "Deux", date=None)))
    before = utcnow()
    first = source().fetch(FEED, None)
    assert [p.text for p in first.posts] == ["Un", "Deux"]
    assert all(p.created_at >= before for p in first.posts)  # no date: the fetch time
    responses.replace(
        responses.GET,
        FEED,
        body=rss(
            item("a-2", "Deux", date=None), item("a-3", "Trois", date=None), item("a-1", "Un", date=None)
        ),
    )
    with caplog.at_level(logging.INFO, logger="ringside.rss"):
        second = source().fetch(FEED, first.cursor)
    assert [p.text for p in second.posts] == ["Trois"]
    assert "1 new entries have no date; stamped with the fetch time" in caplog.text


@responses.activate
def test_an_edited_entry_comes_back_under_the_same_key_with_its_new_text():
    responses.get(FEED, body=rss(item("a-1", "Musk défie Zuckerberg")))
    first = source().fetch(FEED, None)
    responses.replace(responses.GET, FEED, body=rss(item("a-1", "Musk défie Zuckerberg en cage")))
    (edited,) = source().fetch(FEED, first.cursor).posts
    assert edited.key == first.posts[0].key and edited.text == "Musk défie Zuckerberg en cage"


@responses.activate
def test_a_guid_that_is_not_a_uri_is_keyed_within_its_feed_and_an_entry_without_one_by_its_link_or_title():
    no_guid = "<item><title>Lien</title><link>https://press.example/a/7</link></item>"
    responses.get(
        FEED, body=rss(item("1234", "Un"), no_guid, item(None, "Sans lien"), item(None, "Sans lien"))
    )
    posts = source().fetch(FEED, None).posts
    assert {f"{FEED}#1234", "https://press.example/a/7"} < {p.id for p in posts}
    assert (
        len([p for p in posts if p.id.startswith(f"{FEED}#sha1:")]) == 1
    )  # the same title and date: one entry


@responses.activate
def test_a_reply_carries_the_entry_it_answers_from_atom_threading():
    answer = entry(
        "tag:bridge.example,2023:2", "Send Me Location", '<thr:in-reply-to ref="tag:bridge.example,2023:1"/>'
    )
    responses.get(
        FEED, body=atom(entry("tag:bridge.example,2023:1", "I'm up for a cage match if he is lol"), answer)
    )
    posts = {p.id: p for p in source().fetch(FEED, None).posts}
    reply = posts["tag:bridge.example,2023:2"]
    assert (reply.kind, reply.reply_to, reply.author) == ("reply", "tag:bridge.example,2023:1", "elonmusk")
    assert posts["tag:bridge.example,2023:1"].kind == "post" and reply.lang == "en"


@responses.activate
def test_rss_has_no_quotes_or_reposts_so_a_republished_entry_is_a_post_of_the_feed_that_carries_it():
    republished = '<item><title>Repris</title><guid>https://other.example/1</guid><source url="https://other.example/rss">Other</source></item>'
    responses.get(FEED, body=rss(republished))
    (post,) = source(authors={FEED: "actu_sport"}).fetch(FEED, None).posts
    assert (post.kind, post.quote_of, post.author, post.id) == (
        "post",
        None,
        "actu_sport",
        "https://other.example/1",
    )


@responses.activate
def test_when_a_whole_poll_is_new_the_next_pages_are_followed():
    page2 = "https://press.example/feed.xml?page=2"
    responses.get(FEED, body=atom(entry("tag:a,1", "old")))
    first = source().fetch(FEED, None)
    links = f'<link rel="next" href="{page2}"/>'
    responses.replace(
        responses.GET, FEED, body=atom(entry("tag:a,4", "four"), entry("tag:a,3", "three"), links=links)
    )
    responses.get(
        page2,
        body=atom(
            entry("tag:a,2", "two"), entry("tag:a,1", "old"), links='<link rel="next" href="?page=3"/>'
        ),
    )
    fetch = source().fetch(FEED, first.cursor)
    assert sorted(p.text for p in fetch.posts) == ["four", "three", "two"]
    assert [c.request.url for c in responses.calls][1:] == [FEED, page2]  # page 2 held a seen entry: it stops


@responses.activate
def test_a_next_page_on_another_host_is_never_fetched():
    responses.get(FEED, body=atom(entry("tag:a,1", "old")))
    first = source().fetch(FEED, None)
    elsewhere = '<link rel="next" href="http://169.254.169.254/latest/meta-data/"/>'
    responses.replace(responses.GET, FEED, body=atom(entry("tag:a,2", "new"), links=elsewhere))
    assert [p.text for p in source().fetch(FEED, first.cursor).posts] == ["new"]
    assert len(responses.calls) == 2


@responses.activate
def test_a_broken_entry_is_quarantined_and_the_rest_of_the_feed_is_stored():
    far = item("a-2", "Futur", date="Fri, 31 Dec 9999 23:00:00 GMT")
    empty = "<item><guid>a-3</guid></item>"
    responses.get(FEED, body=rss(item("a-1", "Un"), far, empty))
    fetch = source().fetch(FEED, None)
    assert [p.text for p in fetch.posts] == ["Un"]
    assert sorted(r.error for r in fetch.rejected) == [
        "entry has no title and no text",
        "field 'created_at' is 9999-12-31T23:00:00.000+00:00: before 1970 or in the future, not a post's "
        "time",
    ]
    assert sorted(r.record["id"] for r in fetch.rejected) == ["a-2", "a-3"]  # the entries as received


@responses.activate
def test_a_429_pauses_the_feed_until_its_retry_after():
    responses.get(FEED, status=429, headers={"Retry-After": "120"})
    with pytest.raises(RateLimited) as raised:
        source().fetch(FEED, None)
    assert timedelta(seconds=100) < raised.value.reset_at - utcnow() <= timedelta(seconds=120)
    assert "(429); paused until" in str(raised.value)


@responses.activate
def test_a_503_with_a_retry_after_date_pauses_and_one_of_a_year_is_taken_as_a_day():
    later = (utcnow() + timedelta(days=365)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    responses.get(FEED, status=503, headers={"Retry-After": later})
    with pytest.raises(RateLimited) as raised:
        source().fetch(FEED, None)
    assert raised.value.reset_at <= utcnow() + timedelta(hours=24)


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (401, "refused access (401)"),
        (403, "refused access (403)"),
        (404, "the feed is gone (404)"),
        (410, "the feed is gone (410)"),
        (500, "failed (500); retrying next poll"),
        (503, "failed (503); retrying next poll"),
    ],
)
@responses.activate
def test_a_refusal_or_a_server_error_fails_the_poll_saying_what_it_means(status, says):
    responses.get(FEED, status=status)
    with pytest.raises(SourceError, match=re.escape(says)) as raised:
        source().fetch(FEED, None)
    assert not isinstance(raised.value, RateLimited)


@responses.activate
def test_a_page_that_is_not_a_feed_fails_with_feedparsers_reason():
    responses.get(
        FEED, body="<!DOCTYPE html><html><body><p>Bienvenue</p></body></html>", content_type="text/html"
    )
    with pytest.raises(SourceError, match="not an RSS or Atom feed: "):
        source().fetch(FEED, None)


@responses.activate
def test_an_empty_document_from_feedparsers_own_suite_is_not_a_feed():
    responses.get(FEED, body=recorded("feedparser-rss_empty_document.xml"))
    with pytest.raises(SourceError, match="not an RSS or Atom feed"):
        source().fetch(FEED, None)


@responses.activate
def test_a_feed_cut_off_midway_still_gives_the_entries_before_the_cut():
    whole = recorded("lemonde-international.xml")
    responses.get(LE_MONDE, body=whole[: whole.index(b"<item>", 12000)] + b"<item><title><![CD")
    fetch = source(LE_MONDE, first_poll_limit=20).fetch(LE_MONDE, None)
    assert 3 <= len(fetch.posts) < 20 and all(p.text for p in fetch.posts)


@responses.activate
def test_a_feed_larger_than_the_cap_is_refused_unread():
    responses.get(FEED, body=b" " * (MAX_FEED_BYTES + 1))
    with pytest.raises(SourceError, match="larger than 4,194,304 bytes"):
        source().fetch(FEED, None)


@responses.activate
def test_a_body_naming_a_local_file_is_parsed_as_a_body_and_never_opened(tmp_path):
    secret = tmp_path / "feed.xml"
    secret.write_text(rss(item("local-1", "read from disk")), encoding="utf-8")
    responses.get(FEED, body=str(secret))
    with pytest.raises(SourceError, match="not an RSS or Atom feed"):
        source().fetch(FEED, None)


class _DripFeed(BaseHTTPRequestHandler):
    """A feed server sending its answer a byte every 50 ms (until `done`): no single read times out."""

    BODY = rss(item("a-1", "slow")).encode()
    done = threading.Event()
    sent = 0  # bytes of BODY sent when the client gave up

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.end_headers()
        with contextlib.suppress(OSError):
            for byte in self.BODY:
                if self.done.wait(0.05):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                type(self).sent += 1

    def log_message(self, *args) -> None:
        pass


def test_a_server_that_drips_its_feed_is_cut_off_at_the_timeout():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DripFeed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/feed.xml"
    try:
        with pytest.raises(SourceError, match=r"no answer within 0\.5s \(timeout\)"):
            source(url, timeout=0.5).fetch(url, None)
        assert _DripFeed.sent < len(_DripFeed.BODY)  # given up mid-answer, not after reading it all
    finally:
        _DripFeed.done.set()
        server.shutdown()
        server.server_close()


@responses.activate
def test_a_feed_that_moved_is_followed_to_its_new_address():
    responses.get(FEED, status=301, headers={"Location": "https://press.example/new.xml"})
    responses.get("https://press.example/new.xml", body=rss(item("a-1", "Déménagé")))
    assert [p.text for p in source().fetch(FEED, None).posts] == ["Déménagé"]


@responses.activate
def test_an_unreachable_server_fails_the_poll_naming_its_host():
    responses.get(FEED, body=requests.ConnectionError("refused"))
    with pytest.raises(SourceError, match=r"cannot reach press\.example: ConnectionError"):
        source().fetch(FEED, None)


@responses.activate
def test_a_poll_through_the_pipeline_stores_a_challenge_as_a_hit_and_source_health_shows_the_feed(
    store, matcher
):
    challenge = item("x-1", "Elon Musk", "I'm up for a cage match if he is lol")
    responses.get(FEED, body=rss(challenge, item("x-2", "Match nul au Parc")))
    pipeline = Pipeline(store, Detector(matcher), {"press": source()}, [])
    saved = pipeline.poll("press", FEED)
    assert (saved.new_posts, saved.new_hits) == (2, 1)
    again = pipeline.poll("press", FEED)
    assert again.new_posts == 0  # the same entries polled again store nothing twice
    responses.replace(responses.GET, FEED, status=429, headers={"Retry-After": "600"})
    assert pipeline.poll("press", FEED) is None
    (row,) = store.report("source-health").rows
    health = dict(zip(store.report("source-health").columns, row, strict=True))
    assert (health["source"], health["feed"], health["polls"], health["errors"]) == ("press", FEED, 3, 1)
    assert health["last_success"] and "(429); paused until" in health["last_error"]
    assert store.feed_state("press", FEED).paused_until > utcnow()
    (hit_row,) = store.report("latest-hits").rows
    assert "cage match" in str(hit_row)


RSS_SETTINGS = """
[storage]
path = "{tmp}/ringside.db"

[[sources]]
name = "press"
type = "rss"
author = "presse"
feeds = [
    "https://www.lemonde.fr/international/rss_full.xml",
    {url = "https://www.theverge.com/rss/index.xml", author = "theverge"},
]
"""


def test_rss_settings_give_each_feed_its_author_and_a_polite_default_interval(write_config):
    settings = load_settings(write_config(RSS_SETTINGS), environ={})
    (config,) = settings.sources
    assert config.every == 900.0 and config.options["first_poll_limit"] == 20
    assert config.options["feeds"] == (
        {"url": LE_MONDE, "author": "presse"},
        {"url": VERGE, "author": "theverge"},
    )
    built = build_source(config, {})
    assert built.feeds() == [LE_MONDE, VERGE] and built.platform == "rss"


@pytest.mark.parametrize(
    ("feeds", "says"),
    [
        (
            '["file:///etc/passwd"]',
            "sources[0].feeds[0].url: expected an http:// or https:// URL with a host",
        ),
        (
            '["https://a.example/f", "ftp://b.example/f"]',
            "sources[0].feeds[1].url: expected an http:// or https",
        ),
        (
            '["https://a.example/f", "https://a.example/f"]',
            "sources[0].feeds[1].url: 'https://a.example/f' is listed twice",
        ),
        ("[]", "sources[0].feeds: expected a list of feed URLs"),
        ('"https://a.example/f"', "sources[0].feeds: expected a list of feed URLs"),
        ('[{url = "https://a.example/f", auteur = "x"}]', "sources[0].feeds[0].auteur: unknown key"),
        ("[42]", "sources[0].feeds[0].url: expected a string, got a number 42"),
    ],
)
def test_a_bad_feed_setting_is_refused_in_one_line_naming_it(write_config, capsys, feeds, says):
    path = write_config(f'[[sources]]\ntype = "rss"\nfeeds = {feeds}\n')
    assert run_bot.main(["--config", str(path), "check-config"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ringside: error: {path}: {says}")


def test_check_config_shows_each_feed_with_its_author(write_config):
    path = write_config(RSS_SETTINGS)
    done = subprocess.run(
        [sys.executable, "run_bot.py", "--config", str(path), "check-config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (shown,) = json.loads(done.stdout)["sources"]
    assert (shown["type"], shown["every"], shown["timeout"]) == ("rss", 900.0, 20.0)
    assert [(f["url"], f["author"]) for f in shown["feeds"]] == [(LE_MONDE, "presse"), (VERGE, "theverge")]
