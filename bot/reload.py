"""Live reload: the settings file, .env and the rule files, on SIGHUP and when they change on disk.

A reload reads and builds everything the way a start does (settings, rules, model, new sources and channels)
before it touches the running service; anything wrong refuses the whole reload in one log line and the
running version goes on. What passes is swapped in at once between polls (bot.service.Service.adopt).
What only a restart can change (the database, the health port) keeps its running value, said in one line.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import metrics
from bot.app import build_detector, check_watches, source_from, tuned_by
from bot.logs import RedactSecrets
from bot.notifiers import Notifier, build_notifier
from bot.sources import Source
from config import ChannelConfig, ConfigError, Settings, SourceConfig, load_settings

if TYPE_CHECKING:
    from bot.detect.rules import Rule
    from bot.service import Service

log = logging.getLogger("ringside.reload")
# watchfiles: a change is reported once the files have been quiet this long (an editor's save is often a
# write and a rename), and changes within DEBOUNCE_MS at most make one reload.
QUIET_MS = 300
DEBOUNCE_MS = 1600
NAMES_SHOWN = 4  # rule, source or channel names listed in the reload line before "+N more"
# Settings sections whose change the reload line mentions by name (sources and channels are listed apart).
SECTIONS = ("matcher", "detector", "schedule", "delivery", "service", "exchanges", "x", "watches")


@dataclass(frozen=True)
class Diff:
    """What differs between two versions of a set of named things."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def marks(self) -> str:
        """+added -removed ~changed, at most NAMES_SHOWN names of each."""
        parts = []
        for mark, names in (("+", self.added), ("-", self.removed), ("~", self.changed)):
            shown = [mark + name for name in names[:NAMES_SHOWN]]
            if len(names) > NAMES_SHOWN:
                shown.append(f"{mark}{len(names) - NAMES_SHOWN} more")
            parts.extend(shown)
        return " ".join(parts)


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> Diff:
    """Names only in `after`, only in `before`, and in both with values that differ."""
    return Diff(
        added=tuple(name for name in after if name not in before),
        removed=tuple(name for name in before if name not in after),
        changed=tuple(name for name in after if name in before and before[name] != after[name]),
    )


@dataclass(frozen=True)
class Changes:
    rules: tuple[int, int]
    rule_diff: Diff
    sources: Diff
    channels: Diff
    sections: tuple[str, ...]  # other settings sections that changed

    def line(self) -> str:
        """One line for the log, e.g. 'rules 41 -> 42 (+banana), sources +press -old, channels ~slack'."""
        parts = []
        if self.rule_diff:
            parts.append(f"rules {self.rules[0]} -> {self.rules[1]} ({self.rule_diff.marks()})")
        if self.sources:
            parts.append(f"sources {self.sources.marks()}")
        if self.channels:
            parts.append(f"channels {self.channels.marks()}")
        if self.sections:
            parts.append("settings " + " ".join(f"~{name}" for name in self.sections))
        return ", ".join(parts) or "nothing changed"


def fingerprint(config: SourceConfig | ChannelConfig) -> tuple[Any, ...]:
    """What makes a source or channel a different one (a source's interval aside, which only reschedules
    it, and a channel's route, which only sends it other alerts)."""
    return (config.type, config.options, {role: s.reveal() for role, s in config.secrets.items()})


def changes_between(
    before: Settings, after: Settings, old_rules: list[Rule], new_rules: list[Rule]
) -> Changes:
    old_masked, new_masked = before.masked(), after.masked()
    return Changes(
        rules=(len(old_rules), len(new_rules)),
        rule_diff=diff({r.id: r for r in old_rules}, {r.id: r for r in new_rules}),
        sources=diff(
            {s.name: (fingerprint(s), s.every, s.coverage) for s in before.sources},
            {s.name: (fingerprint(s), s.every, s.coverage) for s in after.sources},
        ),
        # A channel's filters change where alerts go (the notifier itself is kept: see _notifiers).
        channels=diff(
            {c.name: (fingerprint(c), c.route) for c in before.channels},
            {c.name: (fingerprint(c), c.route) for c in after.channels},
        ),
        sections=tuple(name for name in SECTIONS if old_masked[name] != new_masked[name]),
    )


def keep_what_needs_a_restart(before: Settings, after: Settings) -> tuple[Settings, list[str]]:
    """`after` with the running values of what cannot change live, and a line for each one that tried."""
    kept = []
    if after.database != before.database:
        kept.append(f"storage.path ({before.database} -> {after.database})")
    old_listen = (before.service.http_host, before.service.http_port)
    if (after.service.http_host, after.service.http_port) != old_listen:
        kept.append(
            f"service.http_host/http_port ({before.service.http_host}:{before.service.http_port} -> "
            f"{after.service.http_host}:{after.service.http_port})"
        )
    if after.misfire_grace != before.misfire_grace:
        kept.append(f"schedule.misfire_grace ({before.misfire_grace:g}s -> {after.misfire_grace:g}s)")
    service = replace(after.service, http_host=old_listen[0], http_port=old_listen[1])
    settings = replace(after, database=before.database, misfire_grace=before.misfire_grace, service=service)
    return settings, [f"{what} changed: takes a restart; the running value stays" for what in kept]


class Reloader:
    """Reloads `service` when asked (`request`, from SIGHUP) and when its files change (`start` watches
    them); one reload at a time, in a thread of its own. `environ` gives the environment a reload reads
    (the process's own, plus .env as it is now)."""

    def __init__(self, service: Service, environ: Callable[[], Mapping[str, str]]) -> None:
        self.service = service
        self.environ = environ
        self.path = service.settings.path
        self._requests: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._rewatch = threading.Event()  # the files moved, or watching was turned on or off
        self._threads: list[threading.Thread] = []
        self._redacted = {secret.reveal() for secret in service.settings.secrets()}

    def request(self, why: str) -> None:
        """Reload soon (a SIGHUP, a file saved); requests made during a reload make one more reload."""
        self._requests.put(why)

    def start(self) -> None:
        """Start the reload thread and the file watcher (idle while service.watch_files is off)."""
        for target in (self._work, self._watch):
            thread = threading.Thread(target=target, name=f"reload{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and reloading (a reload under way finishes, for at most `timeout`)."""
        self._stop.set()
        self._requests.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def reload(self, why: str) -> bool:
        """Read, validate and build the new version, then swap it in; True if it now runs. A refusal is
        one line naming the file (and the line, or the rule or key) and the problem."""
        before = self.service.settings
        try:
            settings = load_settings(self.path, environ=self.environ())
            self._redact(settings)
            settings, kept = keep_what_needs_a_restart(before, settings)
            detector = build_detector(settings)
            check_watches(settings, detector)
            sources, retired = self._sources(settings)
            notifiers = self._notifiers(settings)
            tuned = tuned_by(settings, detector, notifiers)  # ConfigError if a route names what is not there
        except Exception as error:  # whatever it is, the running version must go on: say it in one line
            log.error("reload (%s) refused, the running version goes on: %s", why, _one_line(error))
            metrics.RELOADS.labels("refused").inc()
            return False
        for line in kept:
            log.warning("reload (%s): %s", why, line)
        changes = changes_between(
            before, settings, self.service.pipeline.detector.matcher.rules, detector.matcher.rules
        )
        if not self.service.adopt(settings, detector, sources, notifiers, tuned):
            return False
        _close(retired)
        if (
            watched_files(settings) != watched_files(before)
            or settings.service.watch_files != before.service.watch_files
        ):
            self._rewatch.set()
        log.info("reloaded (%s): %s", why, changes.line())
        metrics.RELOADS.labels("applied").inc()
        return True

    def _sources(self, settings: Settings) -> tuple[dict[str, Source], list[Source]]:
        """The sources `settings` names: the running object where its configuration is the same (it keeps
        its connections and the account ids it looked up), a new one where it changed; and the running
        objects no longer used."""
        pipeline = self.service.pipeline
        running = {config.name: fingerprint(config) for config in self.service.settings.sources}
        sources = {}
        for config in settings.sources:
            if running.get(config.name) == fingerprint(config) and config.name in pipeline.sources:
                sources[config.name] = pipeline.sources[config.name]
            else:
                sources[config.name] = source_from(config, settings, pipeline.store)
        kept = {id(source) for source in sources.values()}
        return sources, [source for source in pipeline.sources.values() if id(source) not in kept]

    def _notifiers(self, settings: Settings) -> list[Notifier]:
        """The channels `settings` names: the running notifier where its configuration is the same."""
        running = {config.name: fingerprint(config) for config in self.service.settings.channels}
        notifiers = {notifier.name: notifier for notifier in self.service.pipeline.notifiers}
        return [
            notifiers[config.name]
            if running.get(config.name) == fingerprint(config) and config.name in notifiers
            else build_notifier(config, self.service.pipeline.store)
            for config in settings.channels
        ]

    def _redact(self, settings: Settings) -> None:
        """Secrets new in these settings are scrubbed from the logs from now on, as those read at start."""
        fresh = {secret.reveal() for secret in settings.secrets()} - self._redacted
        if fresh:
            for handler in logging.getLogger().handlers:
                handler.addFilter(RedactSecrets(sorted(fresh)))
            self._redacted |= fresh

    def _work(self) -> None:
        """Reload for each request, once the service has scheduled its jobs; requests that queued up during
        a reload are served by one more."""
        while True:
            why = self._requests.get()
            if why is None or not self._wait_for_start():
                return
            reasons = [why]
            while not self._requests.empty():
                more = self._requests.get_nowait()
                if more is None:
                    return
                reasons.append(more)
            try:
                self.reload(", ".join(dict.fromkeys(reasons)))
            except Exception:  # a bug in applying: say so, and keep serving the next SIGHUP
                log.exception("reload failed unexpectedly")

    def _wait_for_start(self) -> bool:
        while not self.service.started.wait(0.1):
            if self._stop.is_set() or self.service.stopping.is_set():
                return False
        return not self._stop.is_set()

    def _watch(self) -> None:
        """Request a reload when the settings file, .env or a rule file changes; watches the directories
        (not the files: an editor that saves by rename replaces the file watched)."""
        from watchfiles import watch

        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # our own line says which file changed
        while not self._stop.is_set():
            self._rewatch.clear()
            if not self.service.settings.service.watch_files:
                _Either(self._stop, self._rewatch).wait()
                continue
            files, rules = watched_files(self.service.settings)
            concerns = _concerning(files, rules)
            try:
                for changes in watch(
                    *sorted({file.parent for file in files} | {rules}),
                    watch_filter=lambda _change, path, concerns=concerns: concerns(Path(path)),
                    stop_event=_Either(self._stop, self._rewatch),
                    debounce=DEBOUNCE_MS,
                    step=QUIET_MS,
                    recursive=False,
                ):
                    names = sorted({Path(path).name for _change, path in changes})
                    self.request(f"{', '.join(names)} changed")
            except Exception as error:  # inotify limits, a directory gone: SIGHUP still works
                log.warning(
                    "cannot watch the settings and rule files (%s); reload with SIGHUP", _one_line(error)
                )
                return


def watched_files(settings: Settings) -> tuple[set[Path], Path]:
    """The files whose change reloads (the settings file and .env), and the rules directory."""
    return {settings.path.resolve(), (Path.cwd() / ".env").resolve()}, settings.rules.resolve()


def _concerning(files: set[Path], rules: Path) -> Callable[[Path], bool]:
    def concerns(path: Path) -> bool:
        return path in files or (path.parent == rules and path.suffix == ".toml")

    return concerns


class _Either:
    """Set when either event is (watchfiles asks its stop event only `is_set()`)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)

    def wait(self, step: float = 0.5) -> None:
        while not self.is_set():
            self.events[0].wait(step)


def _close(sources: Iterable[Source]) -> None:
    """Close what the sources a reload replaced hold open (a Jetstream websocket)."""
    for source in sources:
        close = getattr(source, "close", None)
        if callable(close):
            try:
                close()
            except Exception as error:
                log.warning("closing a source a reload replaced: %s", _one_line(error))


def _one_line(error: Exception) -> str:
    """The error as one line; its type too when it is not one of ours that already says what is wrong."""
    text = " ".join(str(error).split())
    return text if isinstance(error, ConfigError) else f"{type(error).__name__}: {text}"
