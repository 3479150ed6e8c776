"""`run_bot.py backfill FILE`: a file of any size stored in batches, resumable, safe beside the service."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.timeutil import iso
from tests.conftest import DEMO_FEED, ROOT, replay_config
from tests.test_service import STARTED, no_process_outlives_its_test, start, wait_for  # noqa: F401 (autouse)


def archive(write_feed, count: int) -> Path:
    """`count` posts a minute apart, every seventh a challenge."""
    return write_feed(
        [
            {
                "platform": "x",
                "id": str(i),
                "author": f"fighter{i % 13}",
                "text": f"I'm up for a cage match, round {i}" if i % 7 == 0 else f"lovely weather, day {i}",
                "created_at": iso(datetime(2023, 1, 1, tzinfo=UTC) + timedelta(minutes=i)),
            }
            for i in range(count)
        ],
        name="archive.jsonl",
    )


COMMAND = [sys.executable, str(ROOT / "run_bot.py")]


def backfill(config: Path, feed: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMMAND, "--config", str(config), "backfill", str(feed), *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def rows(database: Path, sql: str) -> list[tuple]:
    """Read-only, so a reader never takes part in what it watches."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def count(database: Path, table: str) -> int:
    if not database.exists():
        return 0
    try:
        return rows(database, f"SELECT count(*) FROM {table}")[0][0]
    except sqlite3.OperationalError:  # the schema is not made yet
        return 0


def test_backfill_stores_the_file_in_bounded_batches_with_a_progress_line(tmp_path, write_config, write_feed):
    feed = archive(write_feed, 500)
    database = tmp_path / "r.db"
    config = write_config(replay_config(DEMO_FEED, database))
    done = backfill(config, feed, "--batch-size", "200")
    assert done.returncode == 0, done.stderr
    assert count(database, "posts") == 500
    assert rows(database, "SELECT source, feed, fetched FROM runs ORDER BY id") == [
        ("backfill", "archive.jsonl", 200),
        ("backfill", "archive.jsonl", 200),
        ("backfill", "archive.jsonl", 100),
    ]
    assert "backfill: 500 posts," in done.stderr and "posts/s" in done.stderr and "ETA" in done.stderr
    assert done.stdout.count("rule ") == count(database, "alerts") > 0  # delivered: no service runs


def test_a_backfill_killed_mid_file_resumes_from_the_last_committed_batch(tmp_path, write_config, write_feed):
    feed = archive(write_feed, 20000)
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db"))
    database = tmp_path / "r.db"
    process = subprocess.Popen(
        [*COMMAND, "--config", str(config), "backfill", str(feed), "--batch-size", "500"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: count(database, "posts") > 0, timeout=60)
        process.send_signal(signal.SIGKILL)
        first_out, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    stored = count(database, "posts")
    assert 0 < stored < 20000 and stored % 500 == 0  # whole batches only
    resumed = backfill(config, feed, "--batch-size", "500")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("backfill: ") >= 1

    reference = write_config(replay_config(DEMO_FEED, tmp_path / "ref.db"), "ref.toml")
    assert backfill(reference, feed).returncode == 0
    for sql in (
        "SELECT key, text FROM posts ORDER BY key",
        "SELECT post_key, rule_id FROM hits ORDER BY 1, 2",
        "SELECT channel, key FROM alerts ORDER BY 1, 2",
    ):
        assert rows(database, sql) == rows(tmp_path / "ref.db", sql)
    alerts = rows(database, "SELECT count(*), count(DISTINCT key), sum(status = 'sent') FROM alerts")[0]
    assert alerts[0] == alerts[1] == alerts[2] > 0
    assert (first_out + resumed.stdout).count("rule ") == alerts[0]  # each alert shown once


def test_a_backfill_beside_the_running_service_leaves_delivery_to_it_and_each_alert_goes_out_once(
    tmp_path, write_config, write_feed
):
    feed = archive(write_feed, 700)
    database = tmp_path / "r.db"
    config = write_config(replay_config(DEMO_FEED, database))
    service = start(config)
    assert wait_for(lambda: count(database, "posts") == 28)  # the demo replay, at once
    done = backfill(config, feed)
    assert done.returncode == 0, done.stderr
    assert "a service runs on this database; it delivers the alerts" in done.stderr
    assert done.stdout == ""
    assert count(database, "posts") == 28 + 700
    assert wait_for(lambda: rows(database, "SELECT count(*) FROM alerts WHERE status != 'sent'") == [(0,)])
    service.send_signal(signal.SIGTERM)
    out, err = service.communicate(timeout=20)
    assert service.returncode == 0, err
    assert out.count("round ") == 100  # every seventh of the 700 archived posts, once each


def test_once_takes_the_whole_replay_file_one_bounded_batch_after_another(tmp_path, write_config):
    database = tmp_path / "r.db"
    text = replay_config(DEMO_FEED, database).replace('type = "replay"', 'type = "replay"\nbatch_size = 10')
    done = subprocess.run(
        [*COMMAND, "--config", str(write_config(text)), "once"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert count(database, "posts") == 28
    assert rows(database, "SELECT fetched FROM runs ORDER BY id") == [(10,), (10,), (8,)]


def serve(config: Path, out: Path) -> subprocess.Popen:
    """The service, its console alerts going to `out`: a pipe nobody reads would fill and stall delivery."""
    with out.open("w") as stdout:
        process = subprocess.Popen(
            [*COMMAND, "--config", str(config), "run"], cwd=ROOT, stdout=stdout, stderr=subprocess.DEVNULL
        )
    STARTED.append(process)
    return process


def test_a_service_killed_mid_file_resumes_from_the_last_committed_batch(tmp_path, write_config, write_feed):
    feed = archive(write_feed, 20000)
    database = tmp_path / "r.db"
    text = replay_config(feed, database).replace('type = "replay"', 'type = "replay"\nbatch_size = 500')
    config = write_config(text)
    service = serve(config, tmp_path / "first.out")
    assert wait_for(lambda: count(database, "posts") > 0, timeout=60)
    service.send_signal(signal.SIGKILL)
    service.wait(timeout=10)
    stored = count(database, "posts")
    assert 0 < stored < 20000 and stored % 500 == 0  # whole batches only
    restarted = serve(config, tmp_path / "second.out")
    assert wait_for(lambda: count(database, "posts") == 20000, timeout=120)
    # Every alert of 20,000 posts goes through the console: on a loaded machine that takes a while.
    unsent = "SELECT count(*) FROM alerts WHERE status != 'sent'"
    assert wait_for(lambda: rows(database, unsent) == [(0,)], timeout=180)
    restarted.send_signal(signal.SIGTERM)
    restarted.wait(timeout=20)
    assert restarted.returncode == 0

    assert (
        backfill(write_config(replay_config(DEMO_FEED, tmp_path / "ref.db"), "ref.toml"), feed).returncode
        == 0
    )
    for sql in (
        "SELECT key, text FROM posts ORDER BY key",
        "SELECT post_key, rule_id FROM hits ORDER BY 1, 2",
        "SELECT channel, key FROM alerts ORDER BY 1, 2",
    ):
        assert rows(database, sql) == rows(tmp_path / "ref.db", sql)


def test_ctrl_c_stops_a_backfill_after_the_batch_in_hand_in_one_line(tmp_path, write_config, write_feed):
    feed = archive(write_feed, 20000)
    database = tmp_path / "r.db"
    config = write_config(replay_config(DEMO_FEED, database))
    command = [*COMMAND, "--config", str(config), "backfill", str(feed), "--batch-size", "500"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    STARTED.append(process)
    assert wait_for(lambda: count(database, "posts") > 0, timeout=60)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1, err
    assert "backfill: stopped; what is stored stays: run the same command again to resume" in err
    assert "Traceback" not in err
    assert 0 < count(database, "posts") < 20000
