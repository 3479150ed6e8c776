"""One service per database: an OS lock on a file beside it (ringside.db.lock).

Two services polling into one database would both deliver every alert. The lock is `flock`, held by the open
file: the kernel releases it when the process ends, however it ends (SIGKILL, OOM, power cut), so a stale
lock file never blocks the next start. The file itself stays; only the lock on it matters.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from storage import DatabaseError
from storage.opening import WRITES


class DatabaseInUse(Exception):
    """Another Ringside service holds the database's lock; the message names its pid."""


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class ServiceLock:
    """Held from `acquire` until `release` or the end of the process; a context manager."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = lock_path(database)
        self._fd: int | None = None

    def acquire(self) -> ServiceLock:
        """Take the lock at once, or raise DatabaseInUse naming the process that holds it (DatabaseError
        when the lock file cannot be made: the database's directory is not one)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if isinstance(error, PermissionError) or error.errno == errno.EROFS:
                raise DatabaseError(
                    f"{self.database}: read-only directory {self.path.parent} (cannot create the lock file "
                    f"{self.path.name}); {WRITES}"
                ) from None
            raise DatabaseError(f"{self.path}: cannot create the lock file: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DatabaseInUse(
                f"another Ringside service is using {self.database} (pid {holder}); stop it first, "
                "or give this one a storage.path of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ServiceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
