"""Health: a heartbeat file for Docker's HEALTHCHECK, and HTTP /healthz and /metrics.

Healthy means the scheduler runs and a poll finished recently (within three of the longest poll interval,
at least a minute): not merely that the process exists. The scheduler's own jobs publish the service's state
(the heartbeat job, every poll and every delivery): each publication is one document, written to the heartbeat
file that `run_bot.py health` reads and kept in memory for /healthz, so both give one verdict from one
document (`vouches`). A wedged scheduler stops publishing and the document runs out. The HTTP side reads only
what was published, never the database: a slow query or a flood of clients cannot hold the pipeline up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from bot import metrics
from bot.timeutil import iso, parse_datetime, utcnow
from config import Settings

log = logging.getLogger("ringside.health")

HTTP_WORKERS = 4  # requests served at once; more waiting connections get 503 rather than a thread each
HTTP_TIMEOUT = 5.0  # seconds a client may take to send its request or read the answer


def heartbeat_path(database: Path) -> Path:
    return database.with_name(database.name + ".heartbeat")


def stale_after(settings: Settings) -> timedelta:
    """How long after the last poll the service stops counting as healthy: three of the longest poll
    interval (or heartbeats), at least a minute."""
    longest = max((s.every for s in settings.sources), default=60.0)
    return timedelta(seconds=max(3 * longest, 60.0, 3 * settings.service.heartbeat_every))


class Health:
    """The state the scheduler publishes, and the one verdict drawn from it."""

    def __init__(self, settings: Settings, scheduler_state: Callable[[], str]) -> None:
        self.path = heartbeat_path(settings.database)
        self.scheduler_state = scheduler_state
        self.heartbeat_every = settings.service.heartbeat_every
        self.stale_after = stale_after(settings)
        self.last_poll: datetime | None = None
        self.feeds: dict[tuple[str, str], dict[str, Any]] = {}
        self.outbox: dict[str, dict[str, Any]] = {}
        self.document: dict[str, Any] = {}
        # Publications come from several scheduler threads; one at a time keeps the file and memory in step.
        self.lock = threading.Lock()

    def follow(self, settings: Settings, feeds: list[tuple[str, str]]) -> None:
        """After a reload: the new intervals set when the service counts as stale, and the feeds and
        channels no longer configured leave /healthz."""
        with self.lock:
            self.heartbeat_every = settings.service.heartbeat_every
            self.stale_after = stale_after(settings)
            configured = set(feeds)
            self.feeds = {key: row for key, row in self.feeds.items() if key in configured}
            channels = {channel.name for channel in settings.channels}
            self.outbox = {name: row for name, row in self.outbox.items() if name in channels}

    def poll_finished(self, feed: dict[str, Any] | None = None) -> None:
        """A poll ended (whatever its outcome); `feed` is that feed's row for /healthz, if known."""
        with self.lock:
            self.last_poll = utcnow()
            if feed is not None:
                self.feeds[(feed["source"], feed["feed"])] = feed
        self.beat()

    def outbox_seen(self, channel: str, pending: int, dead: int, paused: bool = False) -> None:
        """A channel's backlog as its deliver job last counted it, and whether the channel is paused."""
        with self.lock:
            self.outbox[channel] = {"pending": pending, "dead": dead, "paused": paused}
        metrics.OUTBOX_BACKLOG.labels(channel).set(pending)
        metrics.ALERTS_DEAD.labels(channel).set(dead)
        metrics.CHANNEL_PAUSED.labels(channel).set(int(paused))

    def healthy(self) -> bool:
        return vouches(self.document, utcnow())[0]

    def beat(self) -> None:
        """Publish the state now: rewrite the heartbeat file atomically, saying until when the service counts
        as healthy, and keep the same document for /healthz. A file that cannot be written is logged; the
        document is kept all the same, and the file runs out, which is the truth for Docker."""
        with self.lock:
            now = utcnow()
            self.document = {
                "at": iso(now),
                "scheduler": self.scheduler_state(),
                "pid": os.getpid(),
                "last_poll": iso(self.last_poll) if self.last_poll else None,
                "healthy_until": iso(self._healthy_until(now)),
            }
            try:
                temporary = self.path.with_name(self.path.name + ".tmp")
                temporary.write_text(json.dumps(self.document), encoding="utf-8")
                os.replace(temporary, self.path)
            except OSError as error:
                log.warning("cannot write the heartbeat %s: %s", self.path, error)

    def _healthy_until(self, now: datetime) -> datetime:
        """Three heartbeats ahead, and never past the last poll's staleness; now when not healthy."""
        if self.scheduler_state() != "running" or self.last_poll is None:
            return now
        ahead = now + timedelta(seconds=3 * self.heartbeat_every)
        return max(now, min(ahead, self.last_poll + self.stale_after))

    def report(self) -> dict[str, Any]:
        """The last published state as JSON for /healthz: the verdict, each feed, the outbox."""
        with self.lock:
            document, feeds, backlog = dict(self.document), list(self.feeds.values()), dict(self.outbox)
        healthy, status = vouches(document, utcnow())
        return {
            "healthy": healthy,
            "status": status,
            "scheduler": document.get("scheduler"),
            "last_poll": document.get("last_poll"),
            "healthy_until": document.get("healthy_until"),
            "feeds": sorted(feeds, key=lambda row: (row["source"], row["feed"])),
            "outbox": {
                "pending": sum(c["pending"] for c in backlog.values()),
                "dead": sum(c["dead"] for c in backlog.values()),
                "paused": sorted(name for name, c in backlog.items() if c["paused"]),
                "channels": backlog,
            },
        }


def vouches(document: dict[str, Any], now: datetime) -> tuple[bool, str]:
    """The one definition of healthy, for the health command and /healthz alike: the published document
    says the service is healthy until a moment still ahead. With it, one line that says why."""
    try:
        until = parse_datetime(document["healthy_until"])
    except (KeyError, TypeError, ValueError):
        return False, "unhealthy: nothing published yet (starting)"
    scheduler, last_poll = document.get("scheduler"), document.get("last_poll")
    if now < until:
        return True, f"healthy: scheduler {scheduler}, last poll {last_poll}"
    if last_poll is None:
        return False, f"unhealthy: no poll finished yet (scheduler {scheduler})"
    return False, f"unhealthy: scheduler {scheduler}, last poll {last_poll}"


def check_heartbeat(path: Path) -> tuple[bool, str]:
    """What `run_bot.py health` says: whether the heartbeat file vouches for the service right now."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        parse_datetime(document["healthy_until"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return False, f"no usable heartbeat at {path} ({type(error).__name__})"
    return vouches(document, utcnow())


class HealthServer:
    """/healthz (JSON, 200 or 503) and /metrics (Prometheus text) on a port of their own.

    A fixed pool of `workers` threads serves requests; a connection that finds them all busy is answered 503
    at once and closed, and a client that sends or reads nothing for `timeout` seconds is dropped, so neither
    a flood nor idle connections grow threads or hold the service's stop."""

    def __init__(
        self,
        health: Health,
        host: str,
        port: int,
        workers: int = HTTP_WORKERS,
        timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.health = health
        self.server = _PooledHTTPServer((host, port), _handler(health, timeout), workers)
        self.thread = threading.Thread(target=self.server.serve_forever, name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_port

    def start(self) -> None:
        self.server.start_workers()
        self.thread.start()
        log.info("health and metrics on http://%s:%d/healthz and /metrics", *self.server.server_address[:2])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _PooledHTTPServer(HTTPServer):
    """HTTPServer whose requests go to a fixed pool of daemon threads; none waits for a free one."""

    request_queue_size = 128  # socketserver's 5 would leave a burst of connections to the kernel's retries
    BUSY = b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 5\r\n\r\nbusy\n"

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], workers: int) -> None:
        # Set before binding: a bind that fails (port in use) calls server_close, which needs them.
        self.workers = workers
        # At most `workers` requests are queued or in hand (the semaphore): the queue needs no bound itself.
        self.requests: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue()
        self.idle = threading.Semaphore(workers)
        super().__init__(address, handler)

    def start_workers(self) -> None:
        for number in range(self.workers):
            threading.Thread(target=self._work, name=f"health-http-{number}", daemon=True).start()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.idle.acquire(blocking=False):
            self._refuse(request)
            return
        self.requests.put((request, client_address))

    def _refuse(self, request: socket.socket) -> None:
        with contextlib.suppress(OSError):
            request.settimeout(1.0)
            request.sendall(self.BUSY)
        self.shutdown_request(request)

    def _work(self) -> None:
        while (item := self.requests.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
                self.idle.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("health http: request from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        for _ in range(self.workers):  # each worker leaves once the requests before its None are done
            self.requests.put(None)


def _handler(health: Health, timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            self.timeout = timeout  # StreamRequestHandler applies it to the socket
            super().setup()

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthz":
                report = health.report()
                self._send(
                    200 if report["healthy"] else 503,
                    "application/json",
                    json.dumps(report, indent=2).encode(),
                )
            elif self.path.split("?")[0] == "/metrics":
                self._send(200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(metrics.REGISTRY))
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
