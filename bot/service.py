"""The long-running service: APScheduler jobs around the pipeline, one per feed and one per channel."""

from __future__ import annotations

import logging
import threading
from datetime import UTC

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from bot.pipeline import Pipeline
from bot.timeutil import utcnow
from config import Settings

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
        for notifier in self.pipeline.notifiers:
            self.scheduler.add_job(
                self.pipeline.deliver,
                "interval",
                seconds=self.settings.deliver_every,
                args=[notifier],
                id=f"deliver:{notifier.name}",
                name=f"deliver {notifier.name}",
                next_run_time=now,
            )

    def poll(self, source_name: str, feed: str) -> None:
        saved = self.pipeline.poll(source_name, feed)
        if saved and saved.alerts:
            self.wake_delivery()

    def wake_delivery(self) -> None:
        """Run every channel's deliver job now rather than at its next interval."""
        for notifier in self.pipeline.notifiers:
            job = self.scheduler.get_job(f"deliver:{notifier.name}")
            if job is not None:
                job.modify(next_run_time=utcnow())

    def run_until(self, stop: threading.Event) -> None:
        """Run until `stop` is set, then let the jobs in flight finish and return."""
        self.schedule()
        self.scheduler.start()
        feeds = len(self.scheduler.get_jobs()) - len(self.pipeline.notifiers)
        log.info(
            "running: %d feed(s), %d channel(s); Ctrl-C or SIGTERM stops", feeds, len(self.pipeline.notifiers)
        )
        stop.wait()
        log.info("stopping: finishing the jobs in flight")
        self.scheduler.shutdown(wait=True)
