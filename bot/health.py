"""Health: a heartbeat file for Docker's HEALTHCHECK, and HTTP /healthz and /metrics.

Healthy means the scheduler runs and a poll finished recently (within three of the longest poll interval,
at least a minute): not merely that the process exists. The heartbeat file is rewritten every few seconds
by a job of the scheduler itself, so a wedged scheduler stops it; `run_bot.py health` reads it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bot.metrics import REGISTRY
from bot.timeutil import iso, parse_datetime, utcnow
from config import Settings
from storage.reports import Table
from storage.store import Store

log = logging.getLogger("ringside.health")


def heartbeat_path(database: Path) -> Path:
    return database.with_name(database.name + ".heartbeat")


class Health:
    def __init__(self, settings: Settings, store: Store, scheduler_state: Callable[[], str]) -> None:
        self.path = heartbeat_path(settings.database)
        self.store = store
        self.scheduler_state = scheduler_state
        self.heartbeat_every = settings.service.heartbeat_every
        longest = max((s.every for s in settings.sources), default=60.0)
        self.stale_after = timedelta(seconds=max(3 * longest, 60.0, 3 * self.heartbeat_every))
        self.last_poll: datetime | None = None

    def poll_finished(self) -> None:
        self.last_poll = utcnow()

    def healthy(self) -> bool:
        fresh = self.last_poll is not None and utcnow() - self.last_poll < self.stale_after
        return self.scheduler_state() == "running" and fresh

    def beat(self) -> None:
        """Rewrite the heartbeat file atomically, saying until when the service counts as healthy."""
        now = utcnow()
        until = (
            min(now + timedelta(seconds=3 * self.heartbeat_every), self.last_poll + self.stale_after)
            if (self.healthy() and self.last_poll)
            else now
        )
        document = {
            "at": iso(now),
            "scheduler": self.scheduler_state(),
            "pid": os.getpid(),
            "last_poll": iso(self.last_poll) if self.last_poll else None,
            "healthy_until": iso(until),
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(document), encoding="utf-8")
        os.replace(temporary, self.path)

    def report(self) -> dict[str, Any]:
        """The service's state, and the source-health and alerts reports, as JSON for /healthz."""
        backlog = outbox(self.store)
        return {
            "healthy": self.healthy(),
            "scheduler": self.scheduler_state(),
            "last_poll": iso(self.last_poll) if self.last_poll else None,
            "feeds": rows_of(self.store.report("source-health")),
            "outbox": {
                "pending": sum(c["pending"] for c in backlog.values()),
                "dead": sum(c["dead"] for c in backlog.values()),
                "channels": backlog,
            },
        }


def rows_of(table: Table) -> list[dict[str, Any]]:
    return [dict(zip(table.columns, row, strict=True)) for row in table.rows]


def outbox(store: Store) -> dict[str, dict[str, int]]:
    """Per channel: pending and dead alerts, from the alerts report."""
    return {
        row["channel"]: {"pending": row["pending"], "dead": row["dead"]}
        for row in rows_of(store.report("alerts"))
    }


def check_heartbeat(path: Path) -> tuple[bool, str]:
    """What `run_bot.py health` says: whether the heartbeat file vouches for the service right now."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        until = parse_datetime(document["healthy_until"])
    except (OSError, ValueError, KeyError) as error:
        return False, f"no usable heartbeat at {path} ({type(error).__name__})"
    if utcnow() > until:
        return (
            False,
            f"unhealthy: scheduler {document.get('scheduler')}, last poll {document.get('last_poll')}",
        )
    return True, f"healthy: scheduler {document['scheduler']}, last poll {document['last_poll']}"


class _OutboxCollector(Collector):
    """Outbox gauges read from the database when scraped."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        backlog = GaugeMetricFamily(
            "ringside_outbox_backlog", "Alerts waiting to be sent", labels=["channel"]
        )
        dead = GaugeMetricFamily(
            "ringside_alerts_dead", "Alerts given up on (retry-dead requeues)", labels=["channel"]
        )
        for channel, counts in outbox(self.store).items():
            backlog.add_metric([channel], counts["pending"])
            dead.add_metric([channel], counts["dead"])
        yield backlog
        yield dead


class HealthServer:
    """/healthz (JSON, 200 or 503) and /metrics (Prometheus text) on a port of their own."""

    def __init__(self, health: Health, host: str, port: int) -> None:
        self.health = health
        self.collector = _OutboxCollector(health.store)
        handler = _handler(health)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_port

    def start(self) -> None:
        REGISTRY.register(self.collector)
        self.thread.start()
        log.info("health and metrics on http://%s:%d/healthz and /metrics", *self.server.server_address[:2])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        REGISTRY.unregister(self.collector)


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthz":
                report = health.report()
                self._send(
                    200 if report["healthy"] else 503,
                    "application/json",
                    json.dumps(report, indent=2).encode(),
                )
            elif self.path.split("?")[0] == "/metrics":
                self._send(200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(REGISTRY))
            else:
                self._send(404, "text/plain", b"not found: try /healthz or /metrics\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
