"""The long-running service: APScheduler jobs around the pipeline, one per feed and one per channel."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

from bot.detect.detector import Detector
from bot.gate import Gate
from bot.health import Health, HealthServer
from bot.notifiers import Notifier
from bot.pipeline import Pipeline
from bot.sources import Source
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
        self.started = threading.Event()  # the jobs are scheduled: a reload may change them from now on
        self._waking = threading.Lock()  # a wake-up (or a reload's job changes) and a stop never overlap
        self.gate = Gate()  # polls pass together; a reload swaps rules, feeds and channels alone

    def scheduler_state(self) -> str:
        return {STATE_RUNNING: "running", STATE_PAUSED: "paused"}.get(self.scheduler.state, "stopped")

    def schedule(self) -> None:
        """One interval job per feed and per channel, all starting now (feeds spread by jitter)."""
        for source_name, feed in self.pipeline.feeds():
            self.add_poll_job(source_name, feed)
        self.scheduler.add_job(
            self.health.beat,
            "interval",
            seconds=self.settings.service.heartbeat_every,
            id="heartbeat",
            name="heartbeat",
            next_run_time=utcnow(),
        )
        self._schedule_watches()
        for notifier in self.pipeline.notifiers:
            self.add_deliver_job(notifier)

    def _schedule_watches(self) -> None:
        """The watches' job, when there are watches, every watch_every; none otherwise. Its own job, not
        after each poll: silence must be noticed when nothing is posted, and one evaluation a minute costs
        the same however many feeds there are. Called at start and after a reload."""
        job = self.scheduler.get_job("watches")
        if not self.pipeline.watches:
            if job is not None:
                job.remove()
            return
        if job is None:
            self.scheduler.add_job(
                self.evaluate_watches,
                "interval",
                seconds=self.settings.watch_every,
                id="watches",
                name="watches",
                next_run_time=utcnow(),
            )
        elif job.trigger.interval.total_seconds() != self.settings.watch_every:
            self.scheduler.reschedule_job("watches", trigger="interval", seconds=self.settings.watch_every)

    def add_poll_job(self, source_name: str, feed: str) -> None:
        """Poll the feed now, then every `every` of its source (spread by jitter)."""
        self.scheduler.add_job(
            self.poll,
            "interval",
            seconds=self.pipeline.intervals[source_name],
            jitter=self.settings.jitter or None,
            args=[source_name, feed],
            id=f"poll:{source_name}:{feed}",
            name=f"poll {source_name}:{feed}",
            next_run_time=utcnow(),
        )

    def add_deliver_job(self, notifier: Notifier) -> None:
        """Deliver the channel's outbox now, then every deliver_every."""
        self.scheduler.add_job(
            self.deliver,
            "interval",
            seconds=self.settings.deliver_every,
            args=[notifier],
            id=f"deliver:{notifier.name}",
            name=f"deliver {notifier.name}",
            next_run_time=utcnow(),
        )

    def poll(self, source_name: str, feed: str) -> None:
        # A replay file is read in batches: the rest of what is ready now, batch by batch, but a stop or a
        # waiting reload waits for one batch at most. After a reload the rest is polled with the new version.
        while True:
            with self.gate.shared():
                if not self.pipeline.has_feed(source_name, feed):  # a reload removed it meanwhile
                    return
                saved = self.pipeline.poll_until_caught_up(source_name, feed, self._yield_to_stop_or_reload)
            self.health.poll_finished(self.feed_health(source_name, feed))
            if saved and saved.alerts:
                self.wake_delivery()
            if saved is None or not saved.more or self.stopping.is_set():
                return

    def _yield_to_stop_or_reload(self) -> bool:
        return self.stopping.is_set() or self.gate.wanted()

    def evaluate_watches(self) -> None:
        # Through the gate as a poll: a reload swaps the watches, the people and the routes one by one.
        with self.gate.shared():
            queued = self.pipeline.evaluate_watches()
        if queued:
            self.wake_delivery()

    def deliver(self, notifier: Notifier) -> None:
        if self.pipeline.courier.retired(notifier):  # a reload removed or replaced it while this run waited
            return
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
        for notifier in self.pipeline.notifiers:
            self._run_now(f"deliver:{notifier.name}")

    def _run_now(self, job_id: str) -> None:
        """Run the job now rather than at its next interval; nothing once stopping (see wake_delivery)."""
        with self._waking:
            if self.stopping.is_set():
                return
            job = self.scheduler.get_job(job_id)
            if job is not None:
                job.modify(next_run_time=utcnow())

    def adopt(
        self,
        settings: Settings,
        detector: Detector,
        sources: dict[str, Source],
        notifiers: list[Notifier],
        tuned: dict[str, Any],
    ) -> bool:
        """Run with these from now on: a reload, validated and built by the caller (`tuned` as
        bot.app.tuned_by gave it). Waits for the polls in flight (each finishes with the old rules), swaps
        everything at once, then adds, removes and reschedules jobs. Cursors and alerts are in the database
        and stay there. False once stopping."""
        with self.gate.exclusive(), self._waking:
            if self.stopping.is_set():
                return False
            before, retired = self.settings, list(self.pipeline.notifiers)
            self.settings = settings
            self.pipeline.adopt(detector, sources, notifiers, **tuned)
            self.health.follow(settings, list(self.pipeline.feeds()))
            self._reschedule_polls(before)
            self._reschedule_deliveries(before)
            self._schedule_watches()
            self._relisten([n for n in retired if all(n is not kept for kept in notifiers)])
            if settings.service.heartbeat_every != before.service.heartbeat_every:
                self.scheduler.reschedule_job(
                    "heartbeat", trigger="interval", seconds=settings.service.heartbeat_every
                )
        return True

    def _reschedule_polls(self, before: Settings) -> None:
        """A job for each feed now configured, none for the others; a changed interval or jitter
        reschedules."""
        wanted = {f"poll:{name}:{feed}": (name, feed) for name, feed in self.pipeline.feeds()}
        every_before = {source.name: source.every for source in before.sources}
        for job in self.scheduler.get_jobs():
            if job.id.startswith("poll:") and job.id not in wanted:
                job.remove()
        for job_id, (name, feed) in wanted.items():
            every = self.pipeline.intervals[name]
            if self.scheduler.get_job(job_id) is None:
                self.add_poll_job(name, feed)
            elif every != every_before.get(name) or self.settings.jitter != before.jitter:
                self.scheduler.reschedule_job(
                    job_id, trigger="interval", seconds=every, jitter=self.settings.jitter or None
                )

    def _reschedule_deliveries(self, before: Settings) -> None:
        """A job for each channel now configured, delivering through its current version; none for the
        others (their pending alerts wait in the outbox)."""
        current = {f"deliver:{notifier.name}": notifier for notifier in self.pipeline.notifiers}
        for job in self.scheduler.get_jobs():
            if job.id.startswith("deliver:") and job.id not in current:
                job.remove()
        for job_id, notifier in current.items():
            job = self.scheduler.get_job(job_id)
            if job is None:
                self.add_deliver_job(notifier)
                continue
            if job.args[0] is not notifier:
                job.modify(args=[notifier], next_run_time=utcnow())
            if self.settings.deliver_every != before.deliver_every:
                self.scheduler.reschedule_job(job_id, trigger="interval", seconds=self.settings.deliver_every)

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
        self.started.set()
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
        _call_each(self.pipeline.notifiers, "listen")

    def _relisten(self, retired: list[Notifier]) -> None:
        """After a reload: a channel that was removed or replaced stops taking input (a Slack app's
        buttons); a new one starts (listening twice is harmless: a channel that listens already goes on)."""
        _call_each(retired, "stop_listening")
        self.start_listening()

    def stop_listening(self) -> None:
        """No more input: a button pressed now waits in Slack, which tells the presser it was not taken."""
        _call_each(self.pipeline.notifiers, "stop_listening")

    def close_sources(self) -> None:
        """Close what the sources hold open (a Jetstream websocket); called once no poll runs."""
        _call_each(self.pipeline.sources.values(), "close")

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


def _call_each(objects: Iterable[object], method: str) -> None:
    """Call `method` on each object that has it (only some channels take input, some sources hold a
    connection)."""
    for each in objects:
        call = getattr(each, method, None)
        if callable(call):
            call()
