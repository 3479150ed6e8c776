"""Running for months: heartbeat and health command, /healthz and /metrics, the watchdog, JSON logs,
and secrets kept out of every log line and the database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import timedelta

import yaml

import run_bot
from bot.app import build_pipeline
from bot.health import Health, HealthServer, check_heartbeat, heartbeat_path
from bot.pipeline import Pipeline
from bot.service import Service
from bot.timeutil import iso, utcnow
from config import load_settings
from storage import Store
from tests.conftest import DEMO_FEED, ROOT, replay_config
from tests.receiver import Receiver, status
from tests.test_pipeline import RecordingChannel
from tests.test_service import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    """Status and body; (0, "") while nothing listens yet."""
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except urllib.error.URLError:
        return 0, ""


def test_the_service_serves_healthz_and_metrics_and_keeps_a_heartbeat(tmp_path, write_config, capsys):
    port = free_port()
    config = write_config(
        replay_config(DEMO_FEED, tmp_path / "r.db") + f"\n[service]\nhttp_port = {port}\n"
        'heartbeat_every = "0.5s"\n'
    )
    settings = load_settings(config, environ={})
    store = Store.open(settings.database)
    service = Service(settings, build_pipeline(settings, store))
    stop = threading.Event()
    runner = threading.Thread(target=service.run_until, args=[stop])
    runner.start()
    try:
        assert wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200)
        assert wait_for(lambda: run_bot.main(["--config", str(config), "health"]) == 0)
        _, body = get(f"http://127.0.0.1:{port}/healthz")
        report = json.loads(body)
        assert report["scheduler"] == "running" and report["healthy"]
        assert report["feeds"][0]["source"] == "demo" and report["feeds"][0]["last_success"]
        assert set(report["outbox"]) == {"pending", "dead", "paused", "channels"}
        assert wait_for(
            lambda: (
                'ringside_alerts_total{channel="console",outcome="sent"}'
                in get(f"http://127.0.0.1:{port}/metrics")[1]
            )
        )
        metrics = get(f"http://127.0.0.1:{port}/metrics")[1]
        assert 'ringside_hits_total{category="challenge"}' in metrics
        for name in (
            "ringside_posts_fetched_total",
            "ringside_hits",
            "ringside_poll_duration_seconds_bucket",
            "ringside_outbox_backlog",
            "ringside_alerts_dead",
            "ringside_x_requests",
            "ringside_x_posts_read_total",
        ):
            assert name in metrics, name
    finally:
        stop.set()
        runner.join(15)
        store.close()
    assert run_bot.main(["--config", str(config), "health"]) == 1
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith(
            "unhealthy: scheduler stopped, last poll "
            + json.loads(heartbeat_path(settings.database).read_text())["last_poll"]
        )
    )


def test_a_missing_or_stale_heartbeat_is_unhealthy(tmp_path):
    path = tmp_path / "r.db.heartbeat"
    assert check_heartbeat(path)[0] is False
    path.write_text(
        json.dumps(
            {"healthy_until": iso(utcnow() - timedelta(seconds=1)), "scheduler": "running", "last_poll": None}
        )
    )
    assert check_heartbeat(path) == (False, "unhealthy: no poll finished yet (scheduler running)")


def test_the_health_command_and_healthz_agree_before_and_after_the_first_poll(tmp_path, write_config):
    settings = load_settings(write_config(replay_config(DEMO_FEED, tmp_path / "r.db")), environ={})
    health = Health(settings, lambda: "running")
    path = heartbeat_path(settings.database)
    health.beat()
    assert check_heartbeat(path) == (False, "unhealthy: no poll finished yet (scheduler running)")
    assert health.report()["healthy"] is False and health.report()["status"] == check_heartbeat(path)[1]
    health.poll_finished()  # no heartbeat in between: the first poll is published at once to both
    assert check_heartbeat(path)[0] is True
    assert health.report()["healthy"] is True and health.report()["status"] == check_heartbeat(path)[1]


def start_service(tmp_path, write_config, port: int) -> tuple[Store, threading.Event, threading.Thread]:
    """The demo replayed by a running service serving /healthz on `port`; set the event to stop it."""
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db") + f"\n[service]\nhttp_port = {port}\n")
    settings = load_settings(config, environ={})
    store = Store.open(settings.database)
    service = Service(settings, build_pipeline(settings, store))
    stop = threading.Event()
    runner = threading.Thread(target=service.run_until, args=[stop])
    runner.start()
    return store, stop, runner


def test_healthz_and_metrics_answer_while_the_pipeline_holds_the_database(tmp_path, write_config):
    port = free_port()
    store, stop, runner = start_service(tmp_path, write_config, port)
    try:
        assert wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200)
        assert wait_for(lambda: "ringside_outbox_backlog{" in get(f"http://127.0.0.1:{port}/metrics")[1])
        with store.lock:  # as a long poll or a report does
            health_status, body = get(f"http://127.0.0.1:{port}/healthz")
            metrics_status, metrics = get(f"http://127.0.0.1:{port}/metrics")
        assert health_status == 200 and json.loads(body)["feeds"][0]["last_success"]
        assert metrics_status == 200 and 'ringside_outbox_backlog{channel="console"}' in metrics
    finally:
        stop.set()
        runner.join(15)
        store.close()
    assert not runner.is_alive()


def test_the_health_server_keeps_a_fixed_pool_and_drops_idle_clients(tmp_path, write_config):
    settings = load_settings(write_config(replay_config(DEMO_FEED, tmp_path / "r.db")), environ={})
    server = HealthServer(Health(settings, lambda: "running"), "127.0.0.1", 0, workers=2, timeout=1.0)
    server.start()
    threads = threading.active_count()
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=15) for _ in range(12)]
        answers = [read_until_closed(sock) for sock in idle]  # the server closes every one of them
        assert sum(answer.startswith(b"HTTP/1.0 503") for answer in answers) >= 10  # the pool was full
        assert threading.active_count() == threads
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 503  # nothing published: not healthy
    finally:
        server.stop()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (raises if it never does)."""
    received = b""
    with sock:
        while chunk := sock.recv(4096):
            received += chunk
    return received


# -- watchdog -------------------------------------------------------------------------------------------


class BrokenSource:
    platform = "x"

    def __init__(self) -> None:
        self.name = "x"
        self.broken = True

    def feeds(self) -> list[str]:
        return ["elonmusk"]

    def fetch(self, feed, cursor):
        from bot.models import Fetch
        from bot.sources import SourceError

        if self.broken:
            raise SourceError("X server error (503); retrying next poll")
        return Fetch((), cursor, 0)


def test_a_feed_failing_for_n_intervals_is_reported_once_and_its_recovery_once(store, detector):
    channel = RecordingChannel("ops")
    received = []
    channel.send = lambda alert: received.append(alert.payload)  # keep the whole payload
    source = BrokenSource()
    pipeline = Pipeline(store, detector, {"x": source}, [channel], intervals={"x": 60}, watchdog_after=3)
    pipeline.poll("x", "elonmusk")
    store.db.execute("UPDATE cursors SET failing_since = ?", [iso(utcnow() - timedelta(minutes=4))])
    for _ in range(3):
        pipeline.poll("x", "elonmusk")
        pipeline.deliver_all()
    (failing,) = received
    assert failing["state"] == "failing"
    assert failing["text"].startswith("x:elonmusk failing since ")
    assert failing["text"].endswith("last error: X server error (503); retrying next poll")
    source.broken = False
    pipeline.poll("x", "elonmusk")
    pipeline.poll("x", "elonmusk")
    pipeline.deliver_all()
    assert [p["state"] for p in received] == ["failing", "recovered"]


# -- logs and secrets -----------------------------------------------------------------------------------


def test_json_logs_are_one_object_a_line(tmp_path, write_config):
    config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), "once"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "LOG_FORMAT": "json"},
    )
    lines = result.stderr.strip().splitlines()
    assert lines and all(json.loads(line)["level"] in ("info", "warning") for line in lines)
    assert any(json.loads(line)["message"].startswith("once: 28 post(s)") for line in lines)


CHANNELS_AND_X = """
[delivery]
retry_base = "0.1s"
retry_max = "0.2s"

[[channels]]
name = "slack"
type = "slack"
min_interval = "0s"

[[channels]]
name = "hook"
type = "webhook"

[[sources]]
name = "x"
type = "x"
accounts = ["elonmusk"]
every = "1s"
timeout = "1s"
"""


def test_known_secrets_never_reach_the_logs_or_the_database(tmp_path, write_config):
    with Receiver() as receiver:
        receiver.answer(status(500, "try later"), status(500, "try later"), status(500, "try later"))
        secrets = {
            "X_BEARER_TOKEN": "AAAAsecret-bearer-0001",
            "SLACK_WEBHOOK_URL": receiver.url + "/T00SECRET/B00SECRET/XXXXsecret0003",
            "RINGSIDE_WEBHOOK_URL": receiver.url + "/hooks/secret-path-0004",
            "RINGSIDE_WEBHOOK_SECRET": "whsec-secret-0002",
        }
        config = write_config(replay_config(DEMO_FEED, tmp_path / "r.db") + CHANNELS_AND_X)
        # X is out of reach here (a proxy that refuses): the X source fails, and is logged, on every poll.
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "run_bot.py"),
                "--config",
                str(config),
                "--log-level",
                "DEBUG",
                "run",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                **secrets,
                "HTTPS_PROXY": "http://127.0.0.1:9",
                "https_proxy": "http://127.0.0.1:9",
            },
        )
        try:
            assert wait_for(lambda: len(receiver.accepted()) == 10, timeout=30)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                out, err = process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
    assert process.returncode == 0, err[-2000:]
    assert "x:elonmusk: poll failed: cannot reach X" in err
    assert "HTTP 500: try later" in err
    everything = out + err + database_text(tmp_path)
    for name, value in secrets.items():
        for part in {value, value.rsplit("/", 1)[-1]}:
            assert part not in everything, f"{name} leaked"


def database_text(tmp_path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in tmp_path.glob("r.db*"))


def test_the_compose_file_runs_the_service_with_a_named_volume_an_env_file_and_restarts():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["ringside"]
    assert service["restart"] == "unless-stopped"
    assert service["env_file"][0]["path"] == ".env"
    assert "ringside-data:/data" in service["volumes"] and "ringside-data" in compose["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM python:3.11-slim" in dockerfile
    assert (
        "USER ringside" in dockerfile
        and "HEALTHCHECK" in dockerfile
        and 'CMD ["python", "run_bot.py", "health"]' in dockerfile
    )


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (PyYAML keeps the last one; Compose refuses)."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = {key for key in keys if keys.count(key) > 1}
        assert not duplicates, f"duplicate key(s) {duplicates} at line {node.start_mark.line + 1}"
        return super().construct_mapping(node, deep=deep)


def compose_with_the_x_example() -> str:
    """docker-compose.yml with the lines its X example says to uncomment uncommented."""
    lines = (ROOT / "docker-compose.yml").read_text().splitlines()
    return "\n".join(
        line.replace("# ", "", 1) if line.rstrip().endswith("# X example") else line for line in lines
    )


def test_uncommenting_the_compose_x_example_gives_one_environment_and_one_volumes_key():
    text = compose_with_the_x_example()
    assert text.count("\n") == (ROOT / "docker-compose.yml").read_text().count("\n") - 1
    assert text != "\n".join((ROOT / "docker-compose.yml").read_text().splitlines())
    service = yaml.load(text, Loader=UniqueKeyLoader)["services"]["ringside"]
    assert service["environment"] == {"LOG_FORMAT": "json", "RINGSIDE_CONFIG": "/app/config/mine.toml"}
    assert service["volumes"] == ["ringside-data:/data", "./config/mine.toml:/app/config/mine.toml:ro"]


def test_the_compose_service_runs_read_only_without_capabilities_and_rotates_its_logs():
    service = yaml.load((ROOT / "docker-compose.yml").read_text(), Loader=UniqueKeyLoader)["services"][
        "ringside"
    ]
    assert service["read_only"] is True and any(t.startswith("/tmp") for t in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"]
    assert service["logging"]["options"]["max-size"] and service["logging"]["options"]["max-file"]


def test_only_the_shipped_settings_file_enters_the_docker_build():
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored.index("config/*.toml") < ignored.index("!config/ringside.toml")


def test_a_paused_channel_shows_in_healthz_and_metrics(tmp_path, write_config):
    from prometheus_client import generate_latest

    from bot.metrics import REGISTRY

    settings = load_settings(write_config(replay_config(DEMO_FEED, tmp_path / "r.db")), environ={})
    refusing, other = RecordingChannel("gone", failures=1_000, retry=False), RecordingChannel("other")
    with Store.open(settings.database) as store:
        service = Service(settings, build_pipeline(settings, store, notifiers=[refusing, other]))
        service.poll("demo", DEMO_FEED.name)
        service.deliver(refusing)  # three refusals in a row: paused, its alerts kept
        service.deliver(other)
        outbox = service.health.report()["outbox"]
    assert refusing.attempts == 3
    assert outbox["paused"] == ["gone"] and outbox["channels"]["gone"]["pending"] > 0
    assert outbox["channels"]["other"]["paused"] is False
    assert 'ringside_channel_paused{channel="gone"} 1.0' in generate_latest(REGISTRY).decode()
