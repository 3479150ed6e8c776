"""The long-running service: APScheduler jobs around the pipeline, one per feed and one per channel."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from datetime import UTC
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

from bot.health import Health, HealthServer
from bot.notifiers import Notifier
from bot.pipeline import Pipeline
from bot.timeutil import utcnow
from config import ConfigError, Settings

log = logging.getLogger("ringside.service")
MAX_WORKERS = 8


class Service:
    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=MAX_WORKERS)},
            job_defaults={
                "coalesce": True,  # after a pause, one catch-up run rather than a burst
                "max_instances": 1,  # a slow poll of a feed never overlaps the next one
                "misfire_grace_time": int(settings.misfire_grace) or 1,
            },
            timezone=UTC,
        )
        self.health = Health(settings, self.scheduler_state)
        self.stopping = threading.Event()
        self._waking = threading.Lock()  # a wake-up and the start of a stop never overlap

    def scheduler_state(self) -> str:
        return {STATE_RUNNING: "running", STATE_PAUSED: "paused"}.get(self.scheduler.state, "stopped")

    def schedule(self) -> None:
        """One interval job per feed and per channel, all starting now (feeds spread by jitter)."""
        every = {source.name: source.every for source in self.settings.sources}
        now = utcnow()
        for source_name, feed in self.pipeline.feeds():
            self.scheduler.add_job(
                self.poll,
                "interval",
                seconds=every[source_name],
                jitter=self.settings.jitter or None,
                args=[source_name, feed],
                id=f"poll:{source_name}:{feed}",
                name=f"poll {source_name}:{feed}",
                next_run_time=now,
            )
        self.scheduler.add_job(
            self.health.beat,
            "interval",
            seconds=self.settings.service.heartbeat_every,
            id="heartbeat",
            name="heartbeat",
            next_run_time=now,
        )
        if self.pipeline.watches:
            # Its own job, not after each poll: silence must be noticed when nothing is posted, and one
            # evaluation a minute costs the same however many feeds there are.
            self.scheduler.add_job(
                self.evaluate_watches,
                "interval",
                seconds=self.settings.watch_every,
                id="watches",
                name="watches",
                next_run_time=now,
            )
        for notifier in self.pipeline.notifiers:
            self.scheduler.add_job(
                self.deliver,
                "interval",
                seconds=self.settings.deliver_every,
                args=[notifier],
                id=f"deliver:{notifier.name}",
                name=f"deliver {notifier.name}",
                next_run_time=now,
            )

    def poll(self, source_name: str, feed: str) -> None:
        # A replay file is read in batches: the rest of what is ready now, batch by batch, but a stop
        # waits for one batch at most.
        saved = self.pipeline.poll_until_caught_up(source_name, feed, self.stopping.is_set)
        self.health.poll_finished(self.feed_health(source_name, feed))
        if saved and saved.alerts:
            self.wake_delivery()

    def evaluate_watches(self) -> None:
        if self.pipeline.evaluate_watches():
            self.wake_delivery()

    def deliver(self, notifier: Notifier) -> None:
        self.pipeline.deliver(notifier)
        try:
            self.health.outbox_seen(notifier.name, *self.pipeline.store.backlog(notifier.name))
        except Exception as error:  # /healthz keeps the last count; the next delivery tries again
            log.warning("%s: cannot count the outbox for /healthz: %s", notifier.name, error)

    def feed_health(self, source_name: str, feed: str) -> dict[str, Any] | None:
        """The feed's row for /healthz, read here in the poll job: /healthz never reads the database."""
        try:
            return self.pipeline.store.feed_health(source_name, feed)
        except Exception:  # the poll itself already logged what is wrong with the database
            return None

    def wake_delivery(self) -> None:
        """Run every channel's deliver job now rather than at its next interval; nothing once stopping.

        Why not once stopping: the scheduler's shutdown holds its job-store lock while it waits for the
        jobs, so a poll asking for a job then would wait for the shutdown that waits for it."""
        with self._waking:
            if self.stopping.is_set():
                return
            for notifier in self.pipeline.notifiers:
                job = self.scheduler.get_job(f"deliver:{notifier.name}")
                if job is not None:
                    job.modify(next_run_time=utcnow())

    def run_until(self, stop: threading.Event) -> bool:
        """Run until `stop` is set; then stop taking jobs, let those in flight finish (for at most the
        shutdown grace) and return True if they did. False means a job still uses the store: the caller must
        not close it under the job, but end the process; a job cut short commits nothing, so the next start
        redoes it. ConfigError, before any job ran, if the health port cannot be opened."""
        server = self._health_server()
        self.schedule()
        if server is not None:
            server.start()
        self.scheduler.start()
        self.start_listening()
        feeds = sum(1 for _ in self.pipeline.feeds())
        log.info(
            "running: %d feed(s), %d channel(s); Ctrl-C or SIGTERM stops", feeds, len(self.pipeline.notifiers)
        )
        stop.wait()
        log.info("stopping: finishing the jobs in flight")
        self.stop_listening()
        finished = self.shutdown(self.settings.service.shutdown_grace)
        if finished:
            self.close_sources()
        if server is not None:
            server.stop()
        if not finished:
            log.warning(
                "jobs still running after %.0fs; leaving them: what they had not committed is redone "
                "at the next start",
                self.settings.service.shutdown_grace,
            )
        return finished

    def _health_server(self) -> HealthServer | None:
        """The /healthz and /metrics server, bound (not yet serving); None when no port is configured."""
        host, port = self.settings.service.http_host, self.settings.service.http_port
        if not port:
            return None
        try:
            return HealthServer(self.health, host, port)
        except OSError as error:
            key = "http_host" if isinstance(error, socket.gaierror) else "http_port"
            raise ConfigError(
                f"{self.settings.path}: service.{key}: cannot listen on {host}:{port}: {error.strerror}"
            ) from None

    def start_listening(self) -> None:
        """Channels that take input (a Slack app's buttons, over Socket Mode) start taking it."""
        for notifier in self.pipeline.notifiers:
            listen = getattr(notifier, "listen", None)
            if callable(listen):
                listen()

    def stop_listening(self) -> None:
        """No more input: a button pressed now waits in Slack, which tells the presser it was not taken."""
        for notifier in self.pipeline.notifiers:
            stop = getattr(notifier, "stop_listening", None)
            if callable(stop):
                stop()

    def close_sources(self) -> None:
        """Close what the sources hold open (a Jetstream websocket); called once no poll runs."""
        for source in self.pipeline.sources.values():
            close = getattr(source, "close", None)
            if callable(close):
                close()

    def shutdown(self, grace: float) -> bool:
        """Stop the scheduler, waiting up to `grace` seconds for running jobs; True if they all finished."""
        with self._waking:
            self.stopping.set()
        self.pipeline.courier.halt()
        waiter = threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, daemon=True)
        waiter.start()
        waiter.join(grace)
        with contextlib.suppress(OSError):  # a read-only disk must not turn a stop into a crash
            self.health.beat()
        return not waiter.is_alive()
