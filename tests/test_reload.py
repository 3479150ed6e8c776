"""Live reload: the real `run_bot.py run` process picks up edited rules and settings (a file saved, SIGHUP),
refuses a bad edit in one line and keeps running, and loses or repeats no alert; the real scheduler in-process
for what a reload does to jobs and cursors."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.app import build_pipeline
from bot.detect.rules import load_rules
from bot.gate import Gate
from bot.reload import Reloader, changes_between
from bot.service import Service
from config import DEFAULT_RULES, load_settings
from config.settings import environ_for_reload
from storage import Store
from tests.conftest import ROOT, replay_config
from tests.test_service import (  # noqa: F401 (the fixture that kills what a test started)
    STARTED,
    count_once_ready,
    no_process_outlives_its_test,
    table,
    wait_for,
)

BANANA_RULE = """
[[rules]]
id = "banana-duel"
category = "challenge"
severity = 3
query = '"banana duel"'
"""


@pytest.fixture(autouse=True)
def root_log_filters_restored():
    """A reload adds a secret filter to the root logger's handlers for the rest of the process; in a test
    process those handlers are pytest's, and later tests must not inherit this test's secrets."""
    handlers = logging.getLogger().handlers
    before = {handler: list(handler.filters) for handler in handlers}
    yield
    for handler in logging.getLogger().handlers:
        handler.filters = before.get(handler, [])


def duel_feed(write_feed, count: int, name: str = "duels.jsonl", prefix: str = "") -> Path:
    """`count` posts, one a minute: the even ones a cage match (the shipped rules hit it), the odd ones a
    banana duel (no shipped rule does)."""
    return write_feed(
        [
            {
                "platform": "x",
                "id": f"{prefix}{i}",
                "author": f"{prefix}fighter{i}",
                "text": f"I'm up for a cage match, round {i}" if i % 2 == 0 else f"a banana duel, round {i}",
                "created_at": f"2023-06-21T{i // 60:02d}:{i % 60:02d}:00Z",
            }
            for i in range(count)
        ],
        name=name,
    )


def own_rules(tmp_path: Path) -> Path:
    """A copy of the shipped rule pack that the test may edit."""
    return Path(shutil.copytree(DEFAULT_RULES, tmp_path / "rules"))


def paced(text: str, seconds: float, rules: Path, service: str = "") -> str:
    text = text.replace('type = "replay"', f'type = "replay"\nreplay_seconds = {seconds}', 1)
    text = text.replace(f'rules = "{DEFAULT_RULES}"', f'rules = "{rules}"')
    return text + (f"\n[service]\n{service}\n" if service else "")


class Running:
    """`run_bot.py run` as a user starts it, its log going to a file the test can read while it runs."""

    def __init__(self, config: Path) -> None:
        self.log = config.with_suffix(".log")
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), "run"],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        STARTED.append(self.process)

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if text in line]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=15)
        assert self.process.returncode == 0, self.log.read_text()


SHIPPED = len(load_rules(DEFAULT_RULES))
BANANA_HITS = "SELECT count(*) FROM hits WHERE rule_id = 'banana-duel'"
CAGE_HITS = "SELECT count(*) FROM hits WHERE rule_id = 'cage-fight'"
POSTS = "SELECT count(*) FROM posts"
UNSENT = "SELECT count(*) FROM alerts WHERE status != 'sent'"


def count(database: Path, sql: str) -> int:
    return count_once_ready(database, sql) or 0


def test_a_rule_file_saved_while_running_is_used_for_the_posts_that_come_after(
    tmp_path, write_config, write_feed
):
    rules = own_rules(tmp_path)
    database = tmp_path / "r.db"
    service = Running(write_config(paced(replay_config(duel_feed(write_feed, 40), database), 16, rules)))
    assert wait_for(lambda: count(database, POSTS) >= 4)
    judged_before = {key for (key,) in table(database, "SELECT key FROM posts")}

    (rules / "bananas.toml").write_text(BANANA_RULE, encoding="utf-8")  # no signal: the save is enough
    assert wait_for(lambda: count(database, BANANA_HITS) > 0)
    service.stop()

    hit = {key for (key,) in table(database, "SELECT post_key FROM hits WHERE rule_id = 'banana-duel'")}
    assert hit and not hit & judged_before  # later posts only: what was stored is not judged again
    reloaded = service.lines_with("reloaded (bananas.toml changed): rules ")
    assert len(reloaded) == 1 and reloaded[0].endswith("(+banana-duel)")


def test_sighup_after_an_edit_of_the_settings_adds_a_source_and_a_channel(
    tmp_path, write_config, write_feed, monkeypatch
):
    from tests.receiver import Receiver

    rules = own_rules(tmp_path)
    database = tmp_path / "r.db"
    text = paced(replay_config(duel_feed(write_feed, 16), database), 5, rules, "watch_files = false")
    config = write_config(text)
    second = duel_feed(write_feed, 6, name="second.jsonl", prefix="b")
    with Receiver() as receiver:
        monkeypatch.setenv("RINGSIDE_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("RINGSIDE_WEBHOOK_SECRET", "whsec-reload-test-0001")
        service = Running(config)
        assert wait_for(lambda: count(database, POSTS) >= 2)
        config.write_text(
            text
            + f'\n[[sources]]\nname = "second"\ntype = "replay"\npath = "{second}"\nevery = "1s"\n'
            + '\n[[channels]]\nname = "hook"\ntype = "webhook"\n',
            encoding="utf-8",
        )
        service.signal(signal.SIGHUP)
        assert wait_for(lambda: count(database, "SELECT count(*) FROM posts WHERE id LIKE 'b%'") == 6)
        assert wait_for(lambda: count(database, POSTS) == 22 and count(database, UNSENT) == 0)
        service.stop()
        hooked = table(database, "SELECT key, author FROM alerts WHERE channel = 'hook'")
        assert sorted(r.json["id"] for r in receiver.accepted()) == sorted(key for key, _ in hooked)
    assert any(author.startswith("bfighter") for _, author in hooked)  # the new source alerts the new channel
    assert service.lines_with("reloaded (SIGHUP): sources +second, channels +hook")


def test_a_bad_edit_logs_one_line_naming_file_and_line_and_the_old_rules_go_on(
    tmp_path, write_config, write_feed
):
    rules = own_rules(tmp_path)
    database = tmp_path / "r.db"
    service = Running(write_config(paced(replay_config(duel_feed(write_feed, 40), database), 16, rules)))
    assert wait_for(lambda: count(database, POSTS) >= 2)

    broken = rules / "bananas.toml"
    broken.write_text(BANANA_RULE.replace("severity = 3", "severity = = 3"), encoding="utf-8")
    assert wait_for(lambda: service.lines_with("refused"))
    stored_then, hits_then = count(database, POSTS), count(database, CAGE_HITS)
    # Still polling, with the rules it had: more posts, more cage-match hits.
    assert wait_for(lambda: count(database, POSTS) > stored_then + 2)
    assert wait_for(lambda: count(database, CAGE_HITS) > hits_then)
    service.stop()

    refused = service.lines_with("refused")
    assert len(refused) == 1
    assert f"{broken}: not valid TOML" in refused[0] and "line 5" in refused[0]
    assert count(database, BANANA_HITS) == 0


def test_no_alert_is_lost_or_repeated_across_reloads_that_change_the_rules_and_the_channel(
    tmp_path, write_config, write_feed, monkeypatch
):
    from tests.receiver import Receiver

    rules = own_rules(tmp_path)
    database = tmp_path / "r.db"
    text = paced(replay_config(duel_feed(write_feed, 30), database), 6, rules, "watch_files = false")
    hooked = text.replace(
        '[[channels]]\nname = "console"\ntype = "console"\ncolor = false',
        '[[channels]]\nname = "hook"\ntype = "webhook"\ntimeout = "2s"',
    )
    config = write_config(hooked)
    edits = [
        lambda: config.write_text(hooked.replace('timeout = "2s"', 'timeout = "3s"')),  # a new notifier
        lambda: (rules / "bananas.toml").write_text(BANANA_RULE),  # new rules, mid-delivery
        lambda: config.write_text(hooked),  # and back
    ]
    with Receiver(delay=0.05) as receiver:
        monkeypatch.setenv("RINGSIDE_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("RINGSIDE_WEBHOOK_SECRET", "whsec-reload-test-0001")
        service = Running(config)
        for done, edit in enumerate(edits, start=1):
            assert wait_for(lambda done=done: count(database, POSTS) >= 6 * done)
            edit()
            service.signal(signal.SIGHUP)
            assert wait_for(lambda done=done: len(service.lines_with("reloaded (SIGHUP)")) == done)
        assert wait_for(lambda: count(database, POSTS) == 30 and count(database, UNSENT) == 0, timeout=30)
        service.stop()
        received = [r.json["id"] for r in receiver.accepted()]
    alerting = "SELECT id FROM hits WHERE category NOT IN ('response', 'veto') ORDER BY id"
    alerts = table(database, "SELECT hit_id, key FROM alerts ORDER BY hit_id")
    assert [hit_id for hit_id, _ in alerts] == [hit_id for (hit_id,) in table(database, alerting)]
    assert sorted(received) == sorted(key for _, key in alerts)  # each once: none lost, none repeated
    assert count(database, BANANA_HITS) > 0
    assert [line.split(": ", 1)[1] for line in service.lines_with("reloaded (SIGHUP)")] == [
        "reloaded (SIGHUP): channels ~hook",
        f"reloaded (SIGHUP): rules {SHIPPED} -> {SHIPPED + 1} (+banana-duel)",
        "reloaded (SIGHUP): channels ~hook",
    ]


class InProcess:
    """The service in this process (real scheduler, real store), reloaded by calling its Reloader."""

    def __init__(self, config: Path, environ: Callable[[], dict[str, str]] = dict) -> None:
        settings = load_settings(config, environ=environ())
        self.store = Store.open(settings.database)
        self.service = Service(settings, build_pipeline(settings, self.store))
        self.reloader = Reloader(self.service, environ)
        self.stop = threading.Event()
        self.runner = threading.Thread(target=self.service.run_until, args=[self.stop])

    def __enter__(self) -> InProcess:
        self.runner.start()
        assert self.service.started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.runner.join(15)
        self.store.close()

    def count(self, sql: str) -> int:
        with self.store.lock:  # the service's threads share this connection: never read mid-transaction
            return self.store.db.execute(sql).fetchone()[0]


SECOND = "SELECT count(*) FROM posts WHERE id LIKE 'b%'"


def test_a_feed_removed_by_a_reload_loses_its_job_keeps_its_cursor_and_resumes_when_added_back(
    tmp_path, write_config, write_feed
):
    second = duel_feed(write_feed, 12, name="second.jsonl", prefix="b")
    text = replay_config(duel_feed(write_feed, 2), tmp_path / "r.db")
    both = text + f'\n[[sources]]\nname = "second"\ntype = "replay"\npath = "{second}"\nreplay_seconds = 6\n'
    config = write_config(both)
    with InProcess(config) as running:
        assert wait_for(lambda: running.count(SECOND) >= 2)
        config.write_text(text)
        assert running.reloader.reload("test")
        assert running.service.scheduler.get_job("poll:second:second.jsonl") is None
        left_at = running.store.feed_state("second", "second.jsonl").cursor
        assert left_at is not None
        stored = running.count(SECOND)
        assert stored < 12, "the second feed finished before the reload; slow it down"

        config.write_text(both)
        assert running.reloader.reload("test")
        assert running.service.scheduler.get_job("poll:second:second.jsonl") is not None
        assert wait_for(lambda: running.count(SECOND) == 12)
        fetched = running.count("SELECT sum(fetched) FROM runs WHERE source = 'second'")
    assert fetched == 12  # resumed from its cursor: no post fetched twice


def test_a_reload_that_moves_the_database_keeps_it_says_a_restart_is_needed_and_reschedules_the_rest(
    tmp_path, write_config, write_feed, caplog
):
    text = replay_config(duel_feed(write_feed, 2), tmp_path / "r.db")
    config = write_config(text)
    with InProcess(config) as running:
        config.write_text(
            text.replace(str(tmp_path / "r.db"), str(tmp_path / "elsewhere.db"))
            .replace('deliver_every = "1s"', 'deliver_every = "7s"')
            .replace('\nevery = "1s"', '\nevery = "9s"')
        )
        caplog.set_level(logging.INFO, logger="ringside.reload")
        assert running.reloader.reload("test")
        assert running.service.settings.database == tmp_path / "r.db"
        job = running.service.scheduler.get_job("deliver:console")
        assert job.trigger.interval.total_seconds() == 7
        poll = running.service.scheduler.get_job("poll:demo:duels.jsonl")
        assert poll.trigger.interval.total_seconds() == 9
    said = [record.getMessage() for record in caplog.records if record.name == "ringside.reload"]
    assert said == [
        f"reload (test): storage.path ({tmp_path / 'r.db'} -> {tmp_path / 'elsewhere.db'}) changed: takes a "
        "restart; the running value stays",
        "reloaded (test): sources ~demo, settings ~schedule",
    ]
    assert not (tmp_path / "elsewhere.db").exists()


def test_a_settings_value_that_is_wrong_refuses_the_reload_in_one_line_naming_the_file_and_key(
    tmp_path, write_config, write_feed, caplog
):
    text = replay_config(duel_feed(write_feed, 2), tmp_path / "r.db")
    config = write_config(text)
    with InProcess(config) as running:
        config.write_text(text.replace('\nevery = "1s"', '\nevery = "soon"'))
        caplog.set_level(logging.INFO, logger="ringside.reload")
        assert not running.reloader.reload("test")
        assert running.service.scheduler.get_job("poll:demo:duels.jsonl") is not None
    said = [record.getMessage() for record in caplog.records if record.name == "ringside.reload"]
    assert len(said) == 1 and "\n" not in said[0]
    assert said[0].startswith(
        f"reload (test) refused, the running version goes on: {config}: sources[0].every:"
    )


def test_a_reload_waits_for_the_poll_in_flight_and_polls_that_come_meanwhile_wait_for_the_reload():
    gate, order = Gate(), []
    polling, finish_poll = threading.Event(), threading.Event()

    def poll(name: str, hold: threading.Event | None = None) -> None:
        with gate.shared():
            polling.set()
            if hold is not None:
                hold.wait(10)
            order.append(name)

    def reload() -> None:
        with gate.exclusive():
            order.append("reload")

    threads = [threading.Thread(target=poll, args=["poll in flight", finish_poll])]
    threads[0].start()
    assert polling.wait(10)
    threads.append(threading.Thread(target=reload))
    threads[1].start()
    assert wait_for(gate.wanted)
    threads.append(threading.Thread(target=poll, args=["poll after"]))
    threads[2].start()
    finish_poll.set()
    for thread in threads:
        thread.join(10)
    assert order == ["poll in flight", "reload", "poll after"]


def test_a_webhook_url_rotated_in_dotenv_is_used_after_a_reload_and_no_alert_is_lost_or_sent_twice(
    tmp_path, write_config, write_feed, monkeypatch
):
    from tests.receiver import Receiver

    monkeypatch.chdir(tmp_path)
    text = paced(replay_config(duel_feed(write_feed, 24), tmp_path / "r.db"), 6, DEFAULT_RULES)
    config = write_config(
        text.replace(
            '[[channels]]\nname = "console"\ntype = "console"\ncolor = false',
            '[[channels]]\nname = "hook"\ntype = "webhook"\ntimeout = "2s"',
        )
    )
    dotenv = tmp_path / ".env"
    secret = "RINGSIDE_WEBHOOK_SECRET=whsec-reload-test-0001\n"
    with Receiver() as old, Receiver() as new:
        dotenv.write_text(f"RINGSIDE_WEBHOOK_URL={old.url}\n{secret}")
        with InProcess(config, lambda: environ_for_reload({})) as running:
            assert wait_for(lambda: len(old.accepted()) >= 2)
            dotenv.write_text(f"RINGSIDE_WEBHOOK_URL={new.url}\n{secret}")
            assert running.reloader.reload("test")
            assert wait_for(lambda: running.count(POSTS) == 24 and running.count(UNSENT) == 0)
            with running.store.lock:
                keys = [key for (key,) in running.store.db.execute("SELECT key FROM alerts")]
        assert new.accepted()
        assert sorted(r.json["id"] for r in old.accepted() + new.accepted()) == sorted(keys)


def test_a_reload_reads_dotenv_afresh_but_the_process_environment_still_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SLACK_WEBHOOK_URL=https://hooks.example/new\nX_BEARER_TOKEN=from-file\n")
    environ = environ_for_reload({"X_BEARER_TOKEN": "from-process"})
    assert environ["SLACK_WEBHOOK_URL"] == "https://hooks.example/new"
    assert environ["X_BEARER_TOKEN"] == "from-process"


def test_a_channel_removed_by_a_reload_keeps_its_pending_alerts_and_sends_them_once_added_back(
    tmp_path, write_config, write_feed
):
    from tests.receiver import OK, Receiver, status

    console = replay_config(duel_feed(write_feed, 6), tmp_path / "r.db").replace(
        "[schedule]", '[delivery]\nmax_attempts = 1000\nretry_base = "0.2s"\nretry_max = "0.5s"\n\n[schedule]'
    )
    hooked = console + '\n[[channels]]\nname = "hook"\ntype = "webhook"\ntimeout = "2s"\n'
    config = write_config(hooked)
    hook_alerts = "SELECT count(*) FROM alerts WHERE channel = 'hook'"
    with Receiver(default=status(503)) as receiver:
        environ = {"RINGSIDE_WEBHOOK_URL": receiver.url, "RINGSIDE_WEBHOOK_SECRET": "whsec-reload-test-0001"}
        with InProcess(config, lambda: dict(environ)) as running:
            assert wait_for(lambda: running.count(POSTS) == 6 and len(receiver.received) >= 1)
            made = running.count(hook_alerts)
            config.write_text(console)
            assert running.reloader.reload("test")
            assert running.service.scheduler.get_job("deliver:hook") is None
            assert running.count(hook_alerts + " AND status = 'pending'") == made > 0  # kept, all of them

            receiver.default = OK
            config.write_text(hooked)
            assert running.reloader.reload("test")
            assert wait_for(lambda: running.count(UNSENT) == 0)
            with running.store.lock:
                keys = [
                    key
                    for (key,) in running.store.db.execute("SELECT key FROM alerts WHERE channel = 'hook'")
                ]
        assert sorted(r.json["id"] for r in receiver.accepted()) == sorted(keys)


WATCH = """
[[people]]
id = "musk"
accounts = ["x:elonmusk"]

[[watches]]
name = "musk-quiet"
type = "silence"
person = "musk"
days = 3
"""


def test_a_reload_adds_and_removes_the_watches_job_and_refuses_a_channel_filter_naming_no_rule(
    tmp_path, write_config, write_feed, caplog
):
    text = replay_config(duel_feed(write_feed, 2), tmp_path / "r.db")
    config = write_config(text)
    with InProcess(config) as running:
        assert running.service.scheduler.get_job("watches") is None
        config.write_text(text + WATCH)
        assert running.reloader.reload("test")
        assert running.service.scheduler.get_job("watches") is not None
        assert [w.name for w in running.service.pipeline.watches] == ["musk-quiet"]

        caplog.set_level(logging.INFO, logger="ringside.reload")
        config.write_text(text.replace('type = "console"', 'type = "console"\nrules = ["no-such-rule"]'))
        assert not running.reloader.reload("test")
        assert running.service.scheduler.get_job("watches") is not None  # the running version goes on
        (said,) = [r.getMessage() for r in caplog.records if r.name == "ringside.reload"]
        assert "channels[0].rules: 'no-such-rule' is not the id of a rule" in said

        config.write_text(text)
        assert running.reloader.reload("test")
        assert running.service.scheduler.get_job("watches") is None


def test_a_channel_filter_added_by_a_reload_routes_the_alerts_that_come_after(
    tmp_path, write_config, write_feed
):
    text = paced(replay_config(duel_feed(write_feed, 12), tmp_path / "r.db"), 6, DEFAULT_RULES)
    config = write_config(text)
    with InProcess(config) as running:
        assert wait_for(lambda: running.count("SELECT count(*) FROM alerts") >= 1)
        config.write_text(text.replace('type = "console"', 'type = "console"\nmin_severity = 5'))
        assert running.reloader.reload("test")
        routed_from = running.count("SELECT max(id) FROM alerts")
        hits_before = running.count("SELECT max(id) FROM hits")
        assert wait_for(lambda: running.count("SELECT count(*) FROM posts") == 12)
        hits_after = running.count(f"SELECT count(*) FROM hits WHERE id > {hits_before}")
        alerts_after = running.count(f"SELECT count(*) FROM alerts WHERE id > {routed_from}")
    assert hits_after > 0, "every post came before the reload; slow the feed down"
    assert alerts_after == 0  # the cage matches (severity 4) after the filter reached no channel


def test_the_reload_line_names_a_changed_channel_filter_source_coverage_x_budget_and_watch(
    tmp_path, write_config, write_feed
):
    text = replay_config(duel_feed(write_feed, 2), tmp_path / "r.db")
    before = load_settings(write_config(text), environ={})
    edits = {
        "channels ~console": text.replace('type = "console"', 'type = "console"\nmin_severity = 5'),
        "sources ~demo": text.replace('type = "replay"', 'type = "replay"\ncoverage = true'),
        "settings ~x": text + "\n[x]\nbudget_per_day = 3\n",
    }
    for said, edited in edits.items():
        after = load_settings(write_config(edited), environ={})
        assert changes_between(before, after, [], []).line() == said

    people = text + WATCH.split("[[watches]]")[0]
    before = load_settings(write_config(people), environ={})
    after = load_settings(write_config(text + WATCH), environ={})
    assert changes_between(before, after, [], []).line() == "settings ~watches"


def test_the_watches_job_waits_for_a_reload_in_progress_as_polls_do(tmp_path, write_config, write_feed):
    settings = load_settings(
        write_config(replay_config(duel_feed(write_feed, 2), tmp_path / "r.db") + WATCH), environ={}
    )
    with Store.open(settings.database) as store:
        service = Service(settings, build_pipeline(settings, store))
        evaluating = threading.Thread(target=service.evaluate_watches)
        with service.gate.exclusive():  # a reload swapping the watches, people and routes
            evaluating.start()
            evaluating.join(0.5)
            assert evaluating.is_alive()  # never a mix of the old watches and the new people
        evaluating.join(10)
        assert not evaluating.is_alive()
