"""The service as it runs: real APScheduler in-process, and the real process stopped by SIGTERM or SIGKILL."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bot.app import build_pipeline
from bot.notifiers.console import ConsoleNotifier
from bot.service import Service
from config import load_settings
from storage import Store
from tests.conftest import DEMO_FEED, ROOT, replay_config


def paced_config(write_config, tmp_path: Path, seconds: float) -> Path:
    text = replay_config(DEMO_FEED, tmp_path / "r.db").replace(
        'type = "replay"', f'type = "replay"\nreplay_seconds = {seconds}'
    )
    return write_config(text)


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_scheduler_polls_the_paced_replay_and_delivers_every_alert(tmp_path, write_config):
    settings = load_settings(paced_config(write_config, tmp_path, 2), environ={})
    store = Store.open(settings.database)
    out = io.StringIO()
    pipeline = build_pipeline(settings, store)
    pipeline.notifiers = [ConsoleNotifier("console", stream=out, color=False)]
    pipeline.__post_init__()
    stop = threading.Event()
    runner = threading.Thread(target=Service(settings, pipeline).run_until, args=[stop])
    runner.start()
    try:
        assert wait_for(lambda: store.counts()["posts"] == 28)
        assert wait_for(lambda: store.alert_counts() == {"sent": store.counts()["alerts"]})
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    assert out.getvalue().count("rule ") == store.counts()["alerts"] > 0
    store.close()


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), "run"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def table(path: Path, sql: str) -> list[tuple]:
    store = Store.open(path)
    try:
        return store.db.execute(sql).fetchall()
    finally:
        store.close()


def test_sigterm_finishes_the_work_in_flight_and_exits_0(tmp_path, write_config):
    database = tmp_path / "r.db"
    process = start(paced_config(write_config, tmp_path, 1))
    assert wait_for(lambda: database.exists() and table(database, "SELECT count(*) FROM posts") == [(28,)])
    assert wait_for(lambda: table(database, "SELECT count(*) FROM alerts WHERE status = 'pending'") == [(0,)])
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "received SIGTERM" in err and "stopped" in err
    assert "I'm up for a **cage match** if he is lol" in out


def test_after_sigkill_a_restart_loses_nothing_and_duplicates_nothing(tmp_path, write_config):
    config = paced_config(write_config, tmp_path, 4)
    database = tmp_path / "r.db"
    process = start(config)
    assert wait_for(
        lambda: database.exists() and 0 < table(database, "SELECT count(*) FROM posts")[0][0] < 28
    )
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    restarted = start(config)
    assert wait_for(lambda: table(database, "SELECT count(*) FROM posts")[0][0] == 28)
    assert wait_for(lambda: table(database, "SELECT count(*) FROM alerts WHERE status != 'sent'") == [(0,)])
    restarted.send_signal(signal.SIGTERM)
    restarted.communicate(timeout=10)
    assert restarted.returncode == 0

    reference = write_config(replay_config(DEMO_FEED, tmp_path / "once.db"), name="once.toml")
    subprocess.run(
        [sys.executable, str(ROOT / "run_bot.py"), "--config", str(reference), "once"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    for sql in (
        "SELECT key FROM posts ORDER BY key",
        "SELECT post_key, rule_id FROM hits ORDER BY 1, 2",
        "SELECT channel, key FROM alerts ORDER BY 1, 2",
    ):
        assert table(database, sql) == table(tmp_path / "once.db", sql)
