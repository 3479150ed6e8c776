"""A gate between the scheduler's jobs and a reload: many polls at once, or one reload alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Gate:
    """A readers-writer lock that favours the writer.

    Polls pass `shared()` together; a reload waits in `exclusive()` until the polls in flight are done, and
    polls that arrive meanwhile wait for the reload (otherwise a busy service could keep a reload waiting
    forever). `wanted()` tells a long poll that a reload waits, so it can stop after the batch in hand."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._inside = 0  # jobs holding the gate shared
        self._closed = False  # a reload holds it alone
        self._waiting = 0  # reloads waiting for it

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._closed and not self._waiting)
            self._inside += 1
        try:
            yield
        finally:
            with self._changed:
                self._inside -= 1
                self._changed.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._changed:
            self._waiting += 1
            try:
                self._changed.wait_for(lambda: not self._closed and not self._inside)
            finally:
                self._waiting -= 1
            self._closed = True
        try:
            yield
        finally:
            with self._changed:
                self._closed = False
                self._changed.notify_all()

    def wanted(self) -> bool:
        """Whether a reload waits for the gate (read without the lock: a hint, checked between batches)."""
        return self._waiting > 0
