"""The store: one transaction per poll, re-fetching is harmless, migrations upgrade in place."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils

import run_bot
from bot.models import Fetch, Hit, Post, Rejected, Span
from storage import SCHEMA_VERSION, DatabaseError, Store
from storage.schema import MIGRATIONS, migrate
from tests.conftest import DEMO_FEED, ROOT, replay_config

STARTED = datetime(2023, 6, 21, 3, 0, tzinfo=UTC)


def post(id: str, text: str = "I'm up for a cage match if he is lol", **extra) -> Post:
    return Post(platform="x", id=id, author="elonmusk", text=text, created_at=STARTED, **extra)


def hit(found_in: Post, rule: str = "cage-fight") -> tuple[Post, Hit, dict]:
    key = found_in.key
    return found_in, Hit(key, rule, "challenge", 4, (Span(10, 20, "cage match"),)), {"key": f"k-{key}-{rule}"}


def test_a_poll_stores_posts_hits_alerts_run_and_cursor_together(store):
    fetch = Fetch(posts=(post("1"), post("2", "hello")), cursor="2", read=2)
    saved = store.save_poll("x", "elonmusk", STARTED, fetch, [hit(post("1"))], ["console", "slack"])
    assert (saved.new_posts, saved.new_hits, saved.alerts) == (2, 1, 2)
    assert store.counts() == {"posts": 2, "hits": 1, "alerts": 2}
    assert store.feed_state("x", "elonmusk").cursor == "2"
    run = store.db.execute("SELECT fetched, new, hits, error FROM runs").fetchone()
    assert run == (2, 2, 1, None)


def test_saving_the_same_poll_twice_adds_no_post_hit_or_alert(store):
    fetch = Fetch(posts=(post("1"),), cursor="1", read=1)
    store.save_poll("x", "elonmusk", STARTED, fetch, [hit(post("1"))], ["console"])
    again = store.save_poll("x", "elonmusk", STARTED, fetch, [hit(post("1"))], ["console"])
    assert (again.new_posts, again.new_hits, again.alerts) == (0, 0, 0)
    assert store.counts() == {"posts": 1, "hits": 1, "alerts": 1}


def test_a_hit_without_a_payload_is_stored_but_alerts_nobody(store):
    response = Hit("x:1", "answer", "response", 3, ())
    store.save_poll(
        "x", "f", STARTED, Fetch((post("1"),), "1", 1), [(post("1"), response, None)], ["console"]
    )
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
        store.save_poll("x", "f", STARTED, Fetch((post("2"),), "2", 1), [hit(post("2"))], ["console"])
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
    store.save_poll("x", "f", STARTED, fetch, [hit(post(str(i))) for i in range(3)], ["console"])
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
    old.save_poll("x", "f", STARTED, Fetch((post("1"),), "1", 1), [hit(post("1"))], ["console"])
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


def test_a_database_at_schema_6_keeps_every_row_when_it_gains_versions_and_the_quarantine(tmp_path):
    path = tmp_path / "v6.db"
    db = sqlite_utils.Database(path)
    migrate(db, MIGRATIONS[:6])
    fill_a_schema_6_database(db)
    tables = [t for t in db.table_names() if not t.startswith("posts_fts")]
    before = {table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() for table in tables}
    db.close()

    store = Store.open(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    for table, rows in before.items():
        width = len(rows[0]) if rows else 0
        kept = store.db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
        assert [row[:width] for row in kept] == rows, table
    assert store.db.execute("SELECT key, version FROM posts").fetchall() == [("x:1", 1), ("x:2", 1)]
    assert store.db.execute("SELECT post_key, version FROM hits").fetchall() == [("x:1", 1)]
    assert store.search("hello").rows
    assert store.report("latest-hits").rows[0][-2] == "I'm up for a cage match if he is lol"
    assert store.report("quarantine").rows == []
    store.close()


def test_a_database_at_schema_7_keeps_every_row_and_its_search_when_the_index_is_filled_per_poll(tmp_path):
    path = tmp_path / "v7.db"
    db = sqlite_utils.Database(path)
    migrate(db, MIGRATIONS[:7])
    fill_a_schema_6_database(db)
    tables = [t for t in db.table_names() if not t.startswith("posts_fts")]
    before = {table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() for table in tables}
    db.close()

    store = Store.open(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    for table, rows in before.items():
        assert store.db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall() == rows, table
    triggers = store.db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
    assert [name for (name,) in triggers] == ["posts_ad", "posts_au"]  # inserts are indexed once per poll
    store.db.execute("INSERT INTO posts_fts (posts_fts, rank) VALUES ('integrity-check', 1)")
    assert [row[2] for row in store.search("hello").rows] == ["elonmusk"]
    store.save_poll("x", "f", STARTED, Fetch((Post("x", "3", "finkd", "Prêt", STARTED),), "3", 1), [], [])
    assert [row[2] for row in store.search("pret").rows] == ["finkd"]
    store.close()


def fill_a_schema_6_database(db: sqlite_utils.Database) -> None:
    """A row in every table, written as Ringside at schema 6 wrote them (its columns, no newer code)."""
    at = "2023-06-21T02:58:00.000+00:00"
    for key, text in (("x:1", "I'm up for a cage match if he is lol"), ("x:2", "hello")):
        db["posts"].insert(
            {"key": key, "platform": "x", "id": key[2:], "version_id": key[2:], "author": "elonmusk"}
            | {"author_id": "44196397", "text": text, "url": None, "created_at": at, "lang": "en"}
            | {"kind": "post", "reply_to": None, "quote_of": None, "mentions": "[]", "conversation_id": None}
            | {"source": "x", "fetched_at": at, "raw": json.dumps({"id": key[2:]})}
        )
    db["hits"].insert(
        {"post_key": "x:1", "rule_id": "cage-fight", "category": "challenge", "severity": 4}
        | {"spans": '[[13, 23, "cage match"]]', "matched_at": at, "probability": 0.9, "why": None}
    )
    db["alerts"].insert(
        {"channel": "c", "key": "rs1-a", "hit_id": 1, "payload": "{}", "status": "sent", "attempts": 1}
        | {
            "next_attempt_at": at,
            "created_at": at,
            "sent_at": at,
            "rule_id": "cage-fight",
            "author": "elonmusk",
        }
    )
    db["cursors"].insert({"source": "x", "feed": "elonmusk", "cursor": "2", "updated_at": at})
    db["accounts"].insert({"platform": "x", "username": "elonmusk", "user_id": "44196397", "resolved_at": at})
    db["runs"].insert({"source": "x", "feed": "elonmusk", "started_at": at, "finished_at": at, "fetched": 2})
    db["mutes"].insert({"rule_id": "cage-fight", "until": at, "created_at": at})
    db["exchanges"].insert(
        {"id": "t1", "people": '["musk"]', "status": "open", "severity": 4, "turns": 1}
        | {"started_at": at, "updated_at": at}
    )
    db["exchange_turns"].insert(
        {"exchange_id": "t1", "turn": 1, "post_key": "x:1", "person": "musk", "link": "first"}
    )
    db["labels"].insert(
        {"post_key": "x:1", "label": "flag", "category": "challenge", "text": "cage", "lang": "en"}
        | {"labelled_at": at, "source": "cli"}
    )


def test_two_versions_in_one_poll_are_both_kept_and_the_hit_points_to_the_one_it_matched(store):
    challenge, notice = post("1"), post("1", "This post is unavailable")
    saved = store.save_poll("x", "f", STARTED, Fetch((challenge, notice), "1", 2), [hit(challenge)], ["c"])
    assert (saved.new_posts, saved.new_hits) == (1, 1)
    assert store.db.execute("SELECT version, text FROM post_versions ORDER BY version").fetchall() == [
        (1, challenge.text),
        (2, notice.text),
    ]
    assert store.db.execute("SELECT text, version FROM posts").fetchall() == [(notice.text, 2)]
    assert store.db.execute("SELECT version FROM hits").fetchall() == [(1,)]
    assert store.report("latest-hits").rows[0][-2] == challenge.text


def test_a_post_fetched_again_unchanged_writes_no_version(store):
    for _ in range(2):
        store.save_poll("x", "f", STARTED, Fetch((post("1"),), "1", 1), [hit(post("1"))], ["c"])
    assert store.db.execute("SELECT count(*) FROM post_versions").fetchone() == (0,)
    assert store.db.execute("SELECT version FROM posts").fetchall() == [(1,)]


def test_a_quarantined_record_is_kept_once_and_reads_back_as_received_even_with_a_lone_surrogate(store):
    bad = Rejected({"id": "9", "text": "cage \ud800", "created_at": "0001-01-01"}, "field 'created_at' ...")
    first = store.save_poll("x", "f", STARTED, Fetch((), "9", 1, rejected=(bad,)), [], [])
    again = store.save_poll("x", "f", STARTED, Fetch((), "9", 1, rejected=(bad,)), [], [])
    assert (first.quarantined, again.quarantined) == (("field 'created_at' ...",), ())
    (record,) = store.db.execute("SELECT record FROM quarantine").fetchone()
    assert json.loads(record) == bad.record
    assert store.feed_state("x", "f").cursor == "9"


def test_pruning_an_edited_post_without_hits_removes_its_versions_too(store):
    old = datetime(2020, 1, 1, tzinfo=UTC)
    versions = tuple(Post("x", "1", "elonmusk", text, old) for text in ("first", "second"))
    store.save_poll("x", "f", STARTED, Fetch(versions, "1", 2), [], [])
    assert store.prune(timedelta(days=1))["posts"] == 1
    assert store.db.execute("SELECT count(*) FROM post_versions").fetchone() == (0,)


def test_search_after_a_batch_finds_each_posts_current_text_folded_and_never_a_pruned_post(store):
    old, recent = datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC)
    first = (
        Post("x", "1", "elonmusk", "Prêt pour un combat en cage", recent),
        Post("x", "2", "finkd", "send me location", recent),
        Post("x", "3", "someone", "an old cage story nobody matched", old),
        Post("x", "4", "finkd", "a rival wrote this", recent),
    )
    store.save_poll("x", "f", STARTED, Fetch(first, "4", 4), [], [])
    edited = (
        Post("x", "2", "finkd", "send me your octagon", recent),
        Post("x", "5", "zuck", "pret a tout", recent),
    )
    store.save_poll("x", "f", STARTED, Fetch(edited, "5", 2), [], [])
    store.prune(timedelta(days=1))

    def authors(query: str) -> list[str]:
        return sorted(row[2] for row in store.search(query).rows)

    assert authors("pret") == ["elonmusk", "zuck"]  # accents folded, as the matcher folds them
    assert authors("octagon") == ["finkd"]  # an edited post is found by its current text ...
    assert authors("location") == []  # ... and no longer by the one it replaced
    assert authors("cage") == ["elonmusk"]  # the pruned post is gone from the index
    assert authors("rival") == ["finkd"]
    assert authors("finkd") == ["finkd", "finkd"]  # authors are searchable too


def test_a_label_given_through_an_alert_is_on_the_text_the_alert_showed(store):
    challenge, edit = post("1"), post("1", "Nice weather today")
    store.save_poll("x", "f", STARTED, Fetch((challenge,), "1", 1), [hit(challenge)], ["c"])
    store.save_poll("x", "f", STARTED, Fetch((edit,), "2", 1), [], ["c"])
    (alert,) = store.pending_alerts("c")
    post_key, version = store.post_of_alert(alert.id)
    verdict = store.save_label(post_key, "flag", "challenge", source="alert", version=version)
    assert verdict.text == challenge.text
    assert store.save_label(post_key, "none").text == edit.text  # by key: the current text


# -- damaged and read-only files -------------------------------------------------------------------------

COMMANDS = [
    ["once"],
    ["report", "latest-hits"],
    ["search", "cage"],
    ["alerts", "status"],
    ["mute", "--rule", "cage-fight"],
    ["prune", "--older-than", "90d"],
    ["label", "x:1671370010000000004", "flag"],
]


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory) -> Path:
    """The demo feed stored once, checkpointed into one file, for each test to copy and spoil."""
    folder = tmp_path_factory.mktemp("demo")
    config = folder / "ringside.toml"
    config.write_text(replay_config(DEMO_FEED, folder / "r.db"), encoding="utf-8")
    assert run_bot.main(["--config", str(config), "once"]) == 0
    with sqlite3.connect(folder / "r.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder / "r.db"


def spoil(path: Path, how: str) -> None:
    if how == "random bytes":
        path.write_bytes(random.Random(7).randbytes(path.stat().st_size))
    elif how == "truncated":
        with path.open("r+b") as file:
            file.truncate(path.stat().st_size // 2)
    else:  # one page of the posts table overwritten, the header and schema intact
        with sqlite3.connect(path) as conn:
            size = conn.execute("PRAGMA page_size").fetchone()[0]
            (page,) = conn.execute("SELECT max(pageno) FROM dbstat WHERE name = 'posts'").fetchone()
        conn.close()
        with path.open("r+b") as file:
            file.seek((page - 1) * size + 8)
            file.write(b"\xff" * (size - 8))


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("random bytes", "not an SQLite database"),
        ("truncated", "damaged"),
        ("a damaged page", "damaged"),
    ],
)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_spoiled_database_is_one_line_naming_the_file_and_exit_2_for_every_command(
    demo_database, tmp_path, capsys, how, said, command
):
    path = tmp_path / "r.db"
    shutil.copy(demo_database, path)
    spoil(path, how)
    config = tmp_path / "ringside.toml"
    config.write_text(replay_config(DEMO_FEED, path), encoding="utf-8")
    code = run_bot.main(["--config", str(config), *command])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"ringside: error: {path}: {said}")
    assert len(err.strip().splitlines()) == 1


def without_write_permission(*args: str, config: Path) -> subprocess.CompletedProcess:
    """run_bot.py in a subprocess bound by file permissions, even when the tests run as root."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root ignores file permissions, and setpriv (util-linux) is not here to drop that")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    command = [*prefix, sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)


@pytest.fixture(params=["read-only file", "read-only directory"])
def read_only_database(request, demo_database, tmp_path):
    """A copy of the demo database that this user may read but not write; its settings file."""
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "r.db"
    shutil.copy(demo_database, path)
    config = tmp_path / "ringside.toml"
    config.write_text(replay_config(DEMO_FEED, path), encoding="utf-8")
    path.chmod(0o444)
    if request.param == "read-only directory":
        folder.chmod(0o555)
    yield path, config
    folder.chmod(0o755)


def test_reports_and_search_read_a_read_only_database(read_only_database):
    path, config = read_only_database
    report = without_write_permission("report", "top-accounts", "--format", "json", config=config)
    assert report.returncode == 0, report.stderr
    assert [r["author"] for r in json.loads(report.stdout)] == ["elonmusk", "actu_tech_fr"]
    search = without_write_permission("search", "cage", "--format", "json", config=config)
    assert search.returncode == 0 and json.loads(search.stdout), search.stderr
    assert sorted(p.name for p in path.parent.iterdir()) in (["r.db"], ["r.db", "r.db-shm", "r.db-wal"])


@pytest.mark.parametrize("command", [["once"], ["mute", "--rule", "cage-fight"]], ids=" ".join)
def test_a_command_that_writes_says_the_database_is_read_only(read_only_database, command):
    path, config = read_only_database
    result = without_write_permission(*command, config=config)
    assert result.returncode == 2
    assert result.stderr.startswith(f"ringside: error: {path}: read-only")
    assert len(result.stderr.strip().splitlines()) == 1
