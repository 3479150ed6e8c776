"""The store: one transaction per poll, re-fetching is harmless, migrations upgrade in place."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
import sqlite_utils

from bot.models import Fetch, Hit, Post, Span
from storage import SCHEMA_VERSION, DatabaseError, Store
from storage.schema import MIGRATIONS, migrate

STARTED = datetime(2023, 6, 21, 3, 0, tzinfo=UTC)


def post(id: str, text: str = "I'm up for a cage match if he is lol", **extra) -> Post:
    return Post(platform="x", id=id, author="elonmusk", text=text, created_at=STARTED, **extra)


def hit(post_key: str, rule: str = "cage-fight") -> tuple[Hit, dict]:
    return Hit(post_key, rule, "challenge", 4, (Span(10, 20, "cage match"),)), {"key": f"k-{post_key}-{rule}"}


def test_a_poll_stores_posts_hits_alerts_run_and_cursor_together(store):
    fetch = Fetch(posts=(post("1"), post("2", "hello")), cursor="2", read=2)
    saved = store.save_poll("x", "elonmusk", STARTED, fetch, [hit("x:1")], ["console", "slack"])
    assert (saved.new_posts, saved.new_hits, saved.alerts) == (2, 1, 2)
    assert store.counts() == {"posts": 2, "hits": 1, "alerts": 2}
    assert store.feed_state("x", "elonmusk").cursor == "2"
    run = store.db.execute("SELECT fetched, new, hits, error FROM runs").fetchone()
    assert run == (2, 2, 1, None)


def test_saving_the_same_poll_twice_adds_no_post_hit_or_alert(store):
    fetch = Fetch(posts=(post("1"),), cursor="1", read=1)
    store.save_poll("x", "elonmusk", STARTED, fetch, [hit("x:1")], ["console"])
    again = store.save_poll("x", "elonmusk", STARTED, fetch, [hit("x:1")], ["console"])
    assert (again.new_posts, again.new_hits, again.alerts) == (0, 0, 0)
    assert store.counts() == {"posts": 1, "hits": 1, "alerts": 1}


def test_a_hit_without_a_payload_is_stored_but_alerts_nobody(store):
    response = Hit("x:1", "answer", "response", 3, ())
    store.save_poll("x", "f", STARTED, Fetch((post("1"),), "1", 1), [(response, None)], ["console"])
    assert store.counts() == {"posts": 1, "hits": 1, "alerts": 0}


def test_an_edited_post_keeps_one_row_with_its_newest_text(store):
    store.save_poll("x", "f", STARTED, Fetch((post("1", "first", version_id="1"),), "1", 1), [], [])
    saved = store.save_poll("x", "f", STARTED, Fetch((post("1", "edited", version_id="5"),), "5", 1), [], [])
    assert saved.new_posts == 0
    assert store.db.execute("SELECT text, version_id FROM posts").fetchall() == [("edited", "5")]


def test_a_failure_inside_a_poll_keeps_nothing_of_it_and_leaves_the_cursor(store):
    store.save_poll("x", "f", STARTED, Fetch((post("1"),), "1", 1), [], [])
    # A real fault in the middle of the transaction: the database refuses the hit.
    store.db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON hits BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="disk says no"):
        store.save_poll("x", "f", STARTED, Fetch((post("2"),), "2", 1), [hit("x:2")], ["console"])
    assert store.counts() == {"posts": 1, "hits": 0, "alerts": 0}
    assert store.feed_state("x", "f").cursor == "1"


def test_a_rate_limited_poll_keeps_its_cursor_and_records_the_pause(store):
    store.save_poll("x", "f", STARTED, Fetch((), "9", 0), [], [])
    until = datetime(2030, 1, 1, tzinfo=UTC)
    store.save_failed_poll("x", "f", STARTED, "X rate limit reached", paused_until=until)
    state = store.feed_state("x", "f")
    assert (state.cursor, state.paused_until) == ("9", until)
    assert store.db.execute("SELECT error FROM runs ORDER BY id DESC").fetchone() == ("X rate limit reached",)


def test_alerts_come_out_in_creation_order_and_sent_ones_leave_the_queue(store):
    fetch = Fetch(tuple(post(str(i)) for i in range(3)), "3", 3)
    store.save_poll("x", "f", STARTED, fetch, [hit(f"x:{i}") for i in range(3)], ["console"])
    first, second, third = store.pending_alerts("console")
    assert first.id < second.id < third.id
    store.mark_sent(first.id)
    store.mark_failed(second.id, "boom", retry_at=None)
    assert [a.id for a in store.pending_alerts("console")] == [third.id]
    assert store.alert_counts() == {"sent": 1, "dead": 1, "pending": 1}


def test_a_new_database_is_at_the_current_schema_and_reopening_keeps_its_data(tmp_path):
    path = tmp_path / "r.db"
    first = Store.open(path)
    first.save_poll("x", "f", STARTED, Fetch((post("1"),), "1", 1), [], [])
    first.close()
    again = Store.open(path)
    assert again.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again.counts()["posts"] == 1
    again.close()


def test_a_database_from_a_newer_ringside_is_refused_untouched(tmp_path):
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseError, match="made by a newer Ringside"):
        Store.open(path)


def test_a_foreign_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(DatabaseError, match=r"other\.db: not a Ringside database"):
        Store.open(path)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database " * 100)
    with pytest.raises(DatabaseError, match=r"notes\.db: not an SQLite database"):
        Store.open(path)


def test_a_database_made_by_an_older_version_is_upgraded_in_place_keeping_its_rows(tmp_path):
    path = tmp_path / "old.db"
    old = Store.open(path)
    old.save_poll("x", "f", STARTED, Fetch((post("1"),), "1", 1), [hit("x:1")], ["console"])
    old.close()

    def add_a_column(db: sqlite_utils.Database) -> None:
        db.execute("ALTER TABLE hits ADD COLUMN note TEXT")

    db = sqlite_utils.Database(path)
    assert migrate(db, [*MIGRATIONS, add_a_column]) == SCHEMA_VERSION
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert db.execute("SELECT rule_id, note FROM hits").fetchall() == [("cage-fight", None)]
    assert migrate(db, [*MIGRATIONS, add_a_column]) == SCHEMA_VERSION + 1  # a second run changes nothing
    db.close()


def test_report_views_follow_the_code_without_a_migration(tmp_path):
    from storage.reports import REPORTS, view_sql

    path = tmp_path / "r.db"
    Store.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP VIEW hits_by_day")
        conn.execute("DROP VIEW source_health")
        conn.execute("CREATE VIEW source_health AS SELECT 1 AS stale")
    store = Store.open(path)
    views = dict(store.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'").fetchall())
    assert views == {report.view: view_sql(report) for report in REPORTS.values()}
    store.close()
