"""The service as it runs: real APScheduler in-process, and the real process stopped by SIGTERM or SIGKILL."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.app import build_pipeline
from bot.notifiers.console import ConsoleNotifier
from bot.service import Service
from config import load_settings
from storage import Store
from storage.schema import DatabaseError
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
    pipeline = build_pipeline(
        settings, store, notifiers=[ConsoleNotifier("console", stream=out, color=False)]
    )
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


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    yield
    for process in STARTED:
        if process.poll() is None:
            process.kill()
            process.communicate()
    STARTED.clear()


def start(config: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), "run"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    STARTED.append(process)
    return process


def table(path: Path, sql: str) -> list[tuple]:
    store = Store.open(path, readonly=True)
    try:
        return store.db.execute(sql).fetchall()
    finally:
        store.close()


PENDING = "SELECT count(*) FROM alerts WHERE status = 'pending'"
UNSENT = "SELECT count(*) FROM alerts WHERE status != 'sent'"


def count_once_ready(path: Path, sql: str) -> int | None:
    """The count `sql` gives, or None while the running service is still creating the file: a reader that
    opens it in the middle of the first migration is refused (schema not yet current, or locked)."""
    if not path.exists():
        return None
    try:
        return table(path, sql)[0][0]
    except DatabaseError:
        return None


def test_sigterm_finishes_the_work_in_flight_and_exits_0(tmp_path, write_config):
    database = tmp_path / "r.db"
    process = start(paced_config(write_config, tmp_path, 1))
    assert wait_for(lambda: count_once_ready(database, "SELECT count(*) FROM posts") == 28)
    assert wait_for(lambda: count_once_ready(database, PENDING) == 0)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "received SIGTERM" in err and "stopped" in err
    assert "I'm up for a **cage match** if he is lol" in out


def test_after_sigkill_a_restart_loses_nothing_and_duplicates_nothing(tmp_path, write_config):
    config = paced_config(write_config, tmp_path, 4)
    database = tmp_path / "r.db"
    process = start(config)
    assert wait_for(lambda: 0 < (count_once_ready(database, "SELECT count(*) FROM posts") or 0) < 28)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    restarted = start(config)
    assert wait_for(lambda: count_once_ready(database, "SELECT count(*) FROM posts") == 28)
    assert wait_for(lambda: count_once_ready(database, UNSENT) == 0)
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


def hit_feed(write_feed, count: int) -> Path:
    return write_feed(
        [
            {
                "platform": "x",
                "id": str(i),
                "author": f"fighter{i}",
                "text": f"I'm up for a cage match, round {i}",
                "created_at": f"2023-06-21T{i // 60:02d}:{i % 60:02d}:00Z",
            }
            for i in range(count)
        ],
        name="hits.jsonl",
    )


def webhook_config(write_config, tmp_path: Path, feed: Path, extra: str = "") -> Path:
    text = (
        replay_config(feed, tmp_path / "r.db")
        .replace(
            '[[channels]]\nname = "console"\ntype = "console"\ncolor = false',
            '[[channels]]\nname = "hook"\ntype = "webhook"\ntimeout = "2s"\n' + extra,
        )
        .replace("[schedule]", '[delivery]\nretry_base = "0.1s"\nretry_max = "0.5s"\n\n[schedule]')
    )
    return write_config(text)


def test_after_sigkill_mid_delivery_every_alert_arrives_and_a_repeat_carries_the_same_key(
    tmp_path, write_config, write_feed, monkeypatch
):
    from tests.receiver import Receiver

    feed = hit_feed(write_feed, 30)
    with Receiver(delay=0.15) as receiver:
        monkeypatch.setenv("RINGSIDE_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("RINGSIDE_WEBHOOK_SECRET", "whsec-kill-test-0001")
        config = webhook_config(write_config, tmp_path, feed)
        first = start(config)
        assert wait_for(lambda: len(receiver.accepted()) >= 5)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        assert len(receiver.accepted()) < 30, "the kill came after delivery finished; slow the receiver"
        second = start(config)
        assert wait_for(lambda: len({r.json["id"] for r in receiver.accepted()}) == 30, timeout=60)
        second.send_signal(signal.SIGTERM)
        assert second.communicate(timeout=10) and second.returncode == 0
    keys = [r.headers["X-Ringside-Idempotency-Key"] for r in receiver.accepted()]
    assert {r.json["id"] for r in receiver.accepted()} == set(keys)  # every copy is under its own key
    assert len(keys) - len(set(keys)) <= 1  # at most the one in flight at the kill came twice
    assert table(tmp_path / "r.db", "SELECT status, count(*) FROM alerts GROUP BY status") == [("sent", 30)]


def test_sigterm_stops_the_service_while_a_receiver_drip_feeds_its_answer(
    tmp_path, write_config, write_feed, monkeypatch
):
    from tests.receiver import Answer, Receiver

    # A byte every 0.1 s: the answer would take three hours, and no read ever waits the 2 s timeout.
    with Receiver(default=Answer(body="x" * 100_000, drip=0.1)) as receiver:
        monkeypatch.setenv("RINGSIDE_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("RINGSIDE_WEBHOOK_SECRET", "whsec-drip-test-secret")
        process = start(webhook_config(write_config, tmp_path, hit_feed(write_feed, 3)))
        assert wait_for(lambda: len(receiver.received) >= 1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "received SIGTERM" in err and "stopped" in err
    assert "no answer within 2s (timeout)" in err  # the attempt in flight ended at its deadline


def test_a_stop_waits_no_longer_than_the_shutdown_grace_for_a_job_in_flight(
    tmp_path, write_config, write_feed, monkeypatch
):
    from tests.receiver import Answer, Receiver

    # The channel's 60 s timeout outlasts the 1 s grace: the process exits, leaving the attempt undone.
    with Receiver(default=Answer(hang=60)) as receiver:
        monkeypatch.setenv("RINGSIDE_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("RINGSIDE_WEBHOOK_SECRET", "whsec-grace-test")
        config = webhook_config(write_config, tmp_path, hit_feed(write_feed, 1))
        config.write_text(
            config.read_text().replace('timeout = "2s"', 'timeout = "60s"')
            + '\n[service]\nshutdown_grace = "1s"\n'
        )
        process = start(config)
        assert wait_for(lambda: len(receiver.received) >= 1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "jobs still running after 1s" in err and "stopped" in err
    # The attempt was counted before the send began (so sends cannot repeat without bound); the alert stays
    # pending, to be sent again after its backoff: nothing lost.
    assert table(tmp_path / "r.db", "SELECT status, attempts FROM alerts") == [("pending", 1)]


def test_a_hanging_channel_never_delays_another_in_the_running_service(tmp_path, write_config, write_feed):
    from bot.notifiers.webhook import WebhookNotifier
    from tests.receiver import Answer, Receiver

    feed = hit_feed(write_feed, 5)
    settings = load_settings(write_config(replay_config(feed, tmp_path / "r.db")), environ={})
    store = Store.open(settings.database)
    with Receiver(default=Answer(hang=3.0)) as stuck, Receiver() as quick:
        channels = [
            WebhookNotifier("stuck", stuck.url, "s", timeout=2.5),
            WebhookNotifier("quick", quick.url, "s", timeout=2.5),
        ]
        pipeline = build_pipeline(settings, store, notifiers=channels)
        stop = threading.Event()
        runner = threading.Thread(target=Service(settings, pipeline).run_until, args=[stop])
        runner.start()
        try:
            assert wait_for(lambda: len(quick.accepted()) == 5, timeout=10)
            assert len(stuck.received) <= 1  # still on its first attempt while the other channel finished
        finally:
            stop.set()
            runner.join(15)
    store.close()


def test_a_rate_limited_account_waits_while_the_scheduler_keeps_polling_the_others(tmp_path, write_config):
    import responses

    from tests.xapi import API, USERS, timeline, tweet, users_found

    config = write_config(
        replay_config(DEMO_FEED, tmp_path / "r.db").replace('every = "1s"', 'every = "0.3s"', 1)
        + '\n[[sources]]\nname = "x"\ntype = "x"\naccounts = ["elonmusk", "finkd"]\nevery = "0.3s"\n'
    )
    settings = load_settings(config, environ={"X_BEARER_TOKEN": "AAAA-test"})
    reset = int(time.time()) + 3600
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{API}/users/by", json=users_found("elonmusk", "finkd"))
        mock.get(
            f"{API}/users/{USERS['elonmusk']}/tweets",
            status=429,
            json={"title": "Too Many Requests"},
            headers={"x-rate-limit-reset": str(reset)},
        )
        mock.get(
            f"{API}/users/{USERS['finkd']}/tweets",
            json=timeline(tweet("900", "Send Me Location", author="finkd"), users=("finkd",)),
        )
        store = Store.open(settings.database)
        console = ConsoleNotifier("console", stream=io.StringIO(), color=False)
        pipeline = build_pipeline(settings, store, notifiers=[console])
        stop = threading.Event()
        runner = threading.Thread(target=Service(settings, pipeline).run_until, args=[stop])
        runner.start()
        try:
            polls = "SELECT count(*) FROM runs WHERE feed = 'finkd'"
            assert wait_for(lambda: store.db.execute(polls).fetchone()[0] >= 5)
        finally:
            stop.set()
            runner.join(15)
        musk_calls = [c for c in mock.calls if f"/users/{USERS['elonmusk']}/tweets" in c.request.url]
    assert len(musk_calls) == 1  # paused until X's reset, while finkd was polled again and again
    assert store.feed_state("x", "elonmusk").paused_until is not None
    assert store.db.execute("SELECT count(*) FROM posts WHERE author = 'finkd'").fetchone() == (1,)
    store.close()


def test_once_while_an_account_waits_out_a_429_exits_0_with_one_line_saying_until_when(
    tmp_path, write_config, monkeypatch, caplog
):
    import responses

    import run_bot
    from tests.xapi import API, USERS, timeline, tweet, users_found

    config = write_config(
        replay_config(DEMO_FEED, tmp_path / "r.db")
        + '\n[[sources]]\nname = "x"\ntype = "x"\naccounts = ["elonmusk", "finkd"]\n'
    )
    monkeypatch.setenv("X_BEARER_TOKEN", "AAAA-test")
    caplog.set_level(logging.INFO)
    reset = int(time.time()) + 3600
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{API}/users/by", json=users_found("elonmusk", "finkd"))
        mock.get(
            f"{API}/users/{USERS['elonmusk']}/tweets",
            status=429,
            json={"title": "Too Many Requests"},
            headers={"x-rate-limit-reset": str(reset)},
        )
        mock.get(
            f"{API}/users/{USERS['finkd']}/tweets",
            json=timeline(tweet("900", "Send Me Location", author="finkd"), users=("finkd",)),
        )
        hit_by_the_429 = run_bot.main(["--config", str(config), "once"])
        caplog.clear()
        waiting = run_bot.main(["--config", str(config), "once"])
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(reset))
    assert hit_by_the_429 == waiting == 0
    assert [r.getMessage() for r in caplog.records if "x:elonmusk" in r.getMessage()] == [
        f"once: x:elonmusk is rate limited: paused until {until}"
    ]
    assert "did not poll" not in caplog.text


def run_once(config: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), *options, "once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_service_on_the_same_database_refuses_to_start_naming_the_first(tmp_path, write_config):
    config = paced_config(write_config, tmp_path, 30)
    database = tmp_path / "r.db"
    first = start(config)
    assert wait_for(lambda: (count_once_ready(database, "SELECT count(*) FROM posts") or 0) > 0)
    second = start(config)
    _, err = second.communicate(timeout=30)
    once = run_once(config)
    assert second.returncode == 2 and once.returncode == 2
    for output in (err, once.stderr):
        line = f"ringside: error: another Ringside service is using {database} (pid {first.pid})"
        assert line in output and "Traceback" not in output
    assert first.poll() is None  # the first one runs on, untouched


def test_a_service_killed_with_sigkill_does_not_block_the_next_start(tmp_path, write_config):
    config = paced_config(write_config, tmp_path, 30)
    database = tmp_path / "r.db"
    first = start(config)
    assert wait_for(lambda: (count_once_ready(database, "SELECT count(*) FROM posts") or 0) > 0)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert Path(f"{database}.lock").exists()  # left behind: the OS released the lock, not the file
    once = run_once(config)
    assert once.returncode == 0, once.stderr
    assert table(database, "SELECT count(*) FROM posts") == [(28,)]


def test_read_only_commands_work_while_the_service_runs(tmp_path, write_config):
    config = paced_config(write_config, tmp_path, 30)
    database = tmp_path / "r.db"
    first = start(config)
    assert wait_for(lambda: (count_once_ready(database, "SELECT count(*) FROM posts") or 0) > 0)
    for command in (["check-config"], ["report", "latest-hits"], ["search", "cage"]):
        done = subprocess.run(
            [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), *command],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (command, done.stderr)
    assert first.poll() is None


def test_a_health_port_already_in_use_is_one_line_and_exit_code_2(tmp_path, write_config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db", f"[service]\nhttp_port = {port}"))
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "run_bot.py"),
                "--config",
                str(config),
                "--log-level",
                "WARNING",
                "run",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        STARTED.append(process)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert err.strip().splitlines() == [
        f"ringside: error: {config}: service.http_port: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ]


def test_sigterm_during_a_slow_delivery_never_uses_a_closed_database_and_loses_nothing(
    tmp_path, write_config, write_feed, monkeypatch
):
    from tests.receiver import Receiver

    feed = hit_feed(write_feed, 12)  # few: the once after it sends the rest at 0.4 s each
    with Receiver(delay=0.4) as receiver:
        monkeypatch.setenv("RINGSIDE_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("RINGSIDE_WEBHOOK_SECRET", "whsec-shutdown-test")
        config = webhook_config(write_config, tmp_path, feed, extra='[service]\nshutdown_grace = "1s"\n')
        first = start(config)
        assert wait_for(lambda: len(receiver.accepted()) >= 3)
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
        assert len(receiver.accepted()) < 12, "delivery finished before the stop; slow the receiver"
        assert "Cannot operate on a closed database" not in err and "Traceback" not in err
        assert run_once(config).returncode == 0
    assert table(tmp_path / "r.db", "SELECT status, count(*) FROM alerts GROUP BY status") == [("sent", 12)]


class HeldSource:
    """A real replay source whose fetch waits until the test lets it go: a poll still running at a stop."""

    def __init__(self, source) -> None:
        self.source = source
        self.platform = source.platform
        self.entered = threading.Event()
        self.release = threading.Event()

    def feeds(self) -> list[str]:
        return self.source.feeds()

    def fetch(self, feed: str, cursor: str | None):
        self.entered.set()
        self.release.wait(30)
        return self.source.fetch(feed, cursor)


def stop_while_a_poll_is_held(config: str) -> None:
    """Run in a child process: stop the service while a poll that will find hits is still fetching, let the
    poll go once the stop has begun, and print whether the stop finished within the grace. It ends with
    os._exit: a deadlocked worker thread would otherwise keep the child alive for ever."""
    from apscheduler.schedulers.base import STATE_STOPPED

    settings = load_settings(Path(config), environ={})
    store = Store.open(settings.database)
    console = ConsoleNotifier("console", stream=io.StringIO(), color=False)
    pipeline = build_pipeline(settings, store, notifiers=[console])
    held = pipeline.sources["demo"] = HeldSource(pipeline.sources["demo"])
    service = Service(settings, pipeline)
    stop = threading.Event()
    finished: list[bool] = []
    runner = threading.Thread(target=lambda: finished.append(service.run_until(stop)), daemon=True)
    runner.start()
    held.entered.wait(20)
    stop.set()
    wait_for(lambda: service.scheduler.state == STATE_STOPPED)
    held.release.set()
    runner.join(30)
    print(f"alerts {store.counts()['alerts']}; stop finished {finished}", flush=True)
    os._exit(0)


def test_a_poll_that_finds_hits_while_stopping_does_not_hold_the_stop(tmp_path, write_config):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db", '[service]\nshutdown_grace = "5s"'))
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from tests.test_service import stop_while_a_poll_is_held as run; run({str(config)!r})",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    alerts, finished = child.stdout.strip().removeprefix("alerts ").split("; stop finished ")
    assert int(alerts) > 0, child.stderr  # the poll stored hits and asked for a delivery at once...
    assert finished == "[True]", (
        child.stderr
    )  # ... and that request did not hold the stop for the whole grace


def test_a_stop_ends_delivery_after_the_alert_in_flight_instead_of_working_through_the_backlog(
    tmp_path, write_config, write_feed, monkeypatch
):
    from tests.receiver import Receiver

    # 12 alerts at 0.4 s each would take 5 s, well inside the 20 s grace: only a halt stops them early.
    with Receiver(delay=0.4) as receiver:
        monkeypatch.setenv("RINGSIDE_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("RINGSIDE_WEBHOOK_SECRET", "whsec-halt-test-secret")
        grace = '[service]\nshutdown_grace = "20s"\n'
        config = webhook_config(write_config, tmp_path, hit_feed(write_feed, 12), extra=grace)
        process = start(config)
        assert wait_for(lambda: len(receiver.accepted()) >= 3)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        sent_before_the_stop = len(receiver.accepted())
        assert process.returncode == 0, err
        assert "jobs still running" not in err and "stopped" in err
        assert sent_before_the_stop < 12
        assert run_once(config).returncode == 0
    assert table(tmp_path / "r.db", "SELECT status, count(*) FROM alerts GROUP BY status") == [("sent", 12)]
