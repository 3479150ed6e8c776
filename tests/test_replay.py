"""The replay source: a JSONL file handed out as if live, broken lines reported and skipped."""

from __future__ import annotations

import json
import logging

from bot.sources.replay import ReplaySource, read_posts
from tests.conftest import post_record


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_broken_line_is_reported_with_its_number_and_the_rest_is_used(write_feed, caplog):
    feed = write_feed(
        [
            post_record("1", "first"),
            "{not json",
            {"platform": "x", "id": "3", "author": "a", "created_at": "2023-06-21T00:00:00Z"},
            post_record("4", "fourth", created_at="yesterday"),
            post_record("5", "fifth", kind="story"),
            post_record("6", "sixth"),
        ]
    )
    with caplog.at_level(logging.WARNING):
        posts = read_posts(feed)
    assert [p.id for p in posts] == ["1", "6"]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings[0].startswith(f"{feed}:2: skipped:")
    assert warnings[1] == f"{feed}:3: skipped: missing field 'text'"
    assert warnings[2] == f"{feed}:4: skipped: field 'created_at' is not an ISO-8601 time: 'yesterday'"
    assert warnings[3].startswith(f"{feed}:5: skipped: field 'kind' must be one of")


def test_unpaced_replay_hands_out_everything_in_time_order_then_nothing(write_feed):
    feed = write_feed([post_record("2", "later", "2023-06-22T00:00:00Z"), post_record("1", "sooner")])
    source = ReplaySource("demo", feed)
    first = source.fetch(feed.name, None)
    assert [p.id for p in first.posts] == ["1", "2"]
    again = source.fetch(feed.name, first.cursor)
    assert again.posts == () and again.cursor == first.cursor


def test_paced_replay_releases_posts_as_the_compressed_clock_reaches_them(write_feed):
    feed = write_feed(
        [
            post_record("1", "day one", "2023-06-01T00:00:00Z"),
            post_record("2", "day five", "2023-06-05T00:00:00Z"),
            post_record("3", "day eleven", "2023-06-11T00:00:00Z"),
        ]
    )
    clock = FakeClock()
    source = ReplaySource("demo", feed, replay_seconds=10, clock=clock)  # ten days in ten seconds
    fetched = source.fetch(feed.name, None)
    assert [p.id for p in fetched.posts] == ["1"]
    clock.now += 5
    fetched = source.fetch(feed.name, fetched.cursor)
    assert [p.id for p in fetched.posts] == ["2"]
    clock.now += 5
    assert [p.id for p in source.fetch(feed.name, fetched.cursor).posts] == ["3"]


def test_a_restarted_replay_goes_on_from_its_saved_cursor(write_feed):
    feed = write_feed([post_record(str(i), f"day {i}", f"2023-06-{i:02d}T00:00:00Z") for i in range(1, 11)])
    clock = FakeClock()
    first_run = ReplaySource("demo", feed, replay_seconds=9, clock=clock)  # a day a second
    cursor = first_run.fetch(feed.name, None).cursor
    clock.now += 4
    fetched = first_run.fetch(feed.name, cursor)
    assert [p.id for p in fetched.posts] == ["2", "3", "4", "5"]
    cursor = fetched.cursor
    restarted = ReplaySource("demo", feed, replay_seconds=9, clock=clock)
    assert [p.id for p in restarted.fetch(feed.name, cursor).posts] == []
    clock.now += 1
    assert [p.id for p in restarted.fetch(feed.name, cursor).posts] == ["6"]


def test_a_file_that_starts_with_a_byte_order_mark_keeps_its_first_line(tmp_path, caplog):
    feed = tmp_path / "notepad.jsonl"
    lines = [json.dumps(post_record("1", "first")), json.dumps(post_record("2", "second"))]
    feed.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")  # what Windows Notepad saves
    with caplog.at_level(logging.WARNING):
        posts = read_posts(feed)
    assert [p.id for p in posts] == ["1", "2"]
    assert posts[0].platform == "x" and caplog.records == []


def test_mentions_given_as_one_string_are_refused_naming_the_field(write_feed, caplog):
    feed = write_feed(
        [
            post_record("1", "@finkd cage match?", mentions="finkd"),
            post_record("2", "cage match?", mentions=["finkd", None]),
            post_record("3", "@finkd @elonmusk", mentions=["@finkd", "elonmusk"]),
        ]
    )
    with caplog.at_level(logging.WARNING):
        posts = read_posts(feed)
    assert [(p.id, p.mentions) for p in posts] == [("3", ("finkd", "elonmusk"))]
    assert [r.getMessage() for r in caplog.records] == [
        f"{feed}:1: skipped: field 'mentions' must be a list of usernames, got \"finkd\"",
        f"{feed}:2: skipped: field 'mentions' must be a list of usernames, got null in the list",
    ]


def test_an_empty_text_is_a_post_with_no_words_not_a_missing_field(write_feed, caplog):
    feed = write_feed([post_record("1", ""), {**post_record("2", "x"), "text": None}])
    with caplog.at_level(logging.WARNING):
        posts = read_posts(feed)
    assert [(p.id, p.text) for p in posts] == [("1", "")]
    assert [r.getMessage() for r in caplog.records] == [f"{feed}:2: skipped: missing field 'text'"]


def test_a_platform_name_with_a_colon_is_refused_so_post_keys_never_collide(write_feed, caplog):
    feed = write_feed(
        [
            {**post_record("2", "from platform x:1"), "platform": "x:1"},
            post_record("1:2", "from platform x"),
        ]
    )
    with caplog.at_level(logging.WARNING):
        posts = read_posts(feed)
    assert [(p.platform, p.id, p.key) for p in posts] == [("x", "1:2", "x:1:2")]
    assert [r.getMessage() for r in caplog.records] == [
        f"{feed}:1: skipped: field 'platform' must not contain ':' (a post key is platform:id), got 'x:1'"
    ]


def day_feed(write_feed, days: int, name: str = "feed.jsonl"):
    return write_feed(
        [post_record(str(i), f"day {i}", f"2023-06-{i:02d}T00:00:00Z") for i in range(1, days + 1)], name
    )


def test_an_unpaced_replay_hands_out_bounded_batches_until_the_file_is_read(write_feed):
    feed = day_feed(write_feed, 5)
    source = ReplaySource("demo", feed, batch=2)
    batches, cursor = [], None
    while True:
        fetched = source.fetch(feed.name, cursor)
        batches.append(([p.id for p in fetched.posts], fetched.more))
        cursor = fetched.cursor
        if not fetched.more:
            break
    assert batches == [(["1", "2"], True), (["3", "4"], True), (["5"], False)]
    assert source.fetch(feed.name, cursor).posts == ()
    assert source.bytes_done(cursor) == feed.stat().st_size


def test_a_restarted_stream_reads_on_from_the_byte_offset_of_its_cursor(write_feed):
    feed = day_feed(write_feed, 5)
    cursor = ReplaySource("demo", feed, batch=3).fetch(feed.name, None).cursor
    restarted = ReplaySource("demo", feed, batch=3)
    assert [p.id for p in restarted.fetch(feed.name, cursor).posts] == ["4", "5"]


def test_posts_appended_to_a_read_file_are_handed_out_by_the_next_poll(write_feed):
    feed = day_feed(write_feed, 2)
    source = ReplaySource("demo", feed)
    cursor = source.fetch(feed.name, None).cursor
    with feed.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(post_record("3", "day 3", "2023-06-03T00:00:00Z")) + "\n")
    assert [p.id for p in source.fetch(feed.name, cursor).posts] == ["3"]


def test_a_broken_line_in_a_later_batch_is_reported_with_its_line_number_in_the_file(write_feed, caplog):
    feed = write_feed([post_record("1", "a"), post_record("2", "b"), post_record("3", "c"), "{not json"])
    source = ReplaySource("demo", feed, batch=2)
    first = source.fetch(feed.name, None)
    with caplog.at_level(logging.WARNING):
        second = ReplaySource("demo", feed, batch=2).fetch(feed.name, first.cursor)
    assert [p.id for p in second.posts] == ["3"]
    assert [r.error.partition(":")[0] for r in second.rejected] == ["line 4"]
    assert caplog.records[0].getMessage().startswith(f"{feed}:4: skipped:")
    assert not second.more


def test_a_stream_goes_on_after_the_time_cursor_of_a_paced_run(write_feed):
    feed = write_feed(
        [
            post_record("2", "day 2", "2023-06-02T00:00:00Z"),
            post_record("1", "day 1", "2023-06-01T00:00:00Z"),
            post_record("3", "day 3", "2023-06-03T00:00:00Z"),
        ]
    )
    clock = FakeClock()
    paced = ReplaySource("demo", feed, replay_seconds=2, clock=clock)  # a day a second
    cursor = paced.fetch(feed.name, None).cursor
    clock.now += 1
    cursor = paced.fetch(feed.name, cursor).cursor
    assert [p.id for p in ReplaySource("demo", feed).fetch(feed.name, cursor).posts] == ["3"]


def test_a_paced_replay_skips_the_lines_an_unpaced_run_already_stored(write_feed):
    feed = day_feed(write_feed, 4)
    cursor = ReplaySource("demo", feed, batch=3).fetch(feed.name, None).cursor
    clock = FakeClock()
    paced = ReplaySource("demo", feed, replay_seconds=3, clock=clock)
    clock.now += 3
    assert [p.id for p in paced.fetch(feed.name, cursor).posts] == ["4"]


def test_a_paced_replay_hands_out_at_most_a_batch_of_the_posts_that_are_ready(write_feed):
    feed = day_feed(write_feed, 5)
    clock = FakeClock()
    source = ReplaySource("demo", feed, replay_seconds=4, clock=clock, batch=2)  # a day a second
    first = source.fetch(feed.name, None)
    clock.now += 4  # the replay clock has reached the last post: four are ready at once
    second = source.fetch(feed.name, first.cursor)
    third = source.fetch(feed.name, second.cursor)
    assert [([p.id for p in f.posts], f.more) for f in (first, second, third)] == [
        (["1"], False),
        (["2", "3"], True),
        (["4", "5"], False),
    ]


def test_a_file_rewritten_with_other_posts_of_the_same_length_is_read_again(write_feed):
    feed = write_feed([post_record("1", "cage match #1")])
    cursor = ReplaySource("demo", feed).fetch(feed.name, None).cursor
    feed = write_feed([post_record("2", "cage match #2")])  # same name, same size
    assert [p.id for p in ReplaySource("demo", feed).fetch(feed.name, cursor).posts] == ["2"]
