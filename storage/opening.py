"""Opening a database file: a connection (read-only through SQLite's mode=ro), and the checks that turn a
damaged, foreign, read-only or too-new file into one DatabaseError that says what is wrong."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlite_utils

from storage.schema import SCHEMA_VERSION, DatabaseError

# Said after every "read-only": the commands that only read (report, search, alerts status) still work.
WRITES = "this command writes to the database (report, search and alerts status only read)"


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection to `path`; read-only ones through SQLite's `mode=ro`, so file permissions may forbid
    writing."""
    if not readonly:
        return sqlite3.connect(path, check_same_thread=False, timeout=10)
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
    try:
        conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.OperationalError as error:
        if getattr(error, "sqlite_errorname", "") != "SQLITE_READONLY_DIRECTORY":
            raise
        conn.close()
        # A WAL database needs its -shm file, which a read-only directory cannot get. Nobody can be writing
        # there (a writer needs the -wal file too), so the file is read as it stands, unless a -wal left
        # behind holds part of it.
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise DatabaseError(
                f"read-only directory, and {wal.name} holds changes SQLite can read only with write access "
                "there; copy both files to a writable directory"
            ) from None
        conn = sqlite3.connect(uri + "&immutable=1", uri=True, check_same_thread=False)
    return conn


def check_writable(path: Path) -> None:
    """DatabaseError unless this process may write the database (and the -wal and -shm files beside it)."""
    if path.exists() and not os.access(path, os.W_OK):
        raise DatabaseError(f"read-only (file permissions); {WRITES}")
    companions = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    if not os.access(path.parent, os.W_OK) and not all(os.access(c, os.W_OK) for c in companions):
        raise DatabaseError(
            f"read-only directory {path.parent} (SQLite keeps {path.name}-wal and -shm beside the database); "
            f"{WRITES}"
        )


def check_intact(db: sqlite_utils.Database) -> None:
    """DatabaseError when SQLite finds the file damaged: torn pages, a truncated file, broken b-trees."""
    problems = [row[0] for row in db.execute("PRAGMA quick_check(1)").fetchall()]
    if problems != ["ok"]:
        # SQLite's report spans lines under a "*** in database main ***" heading: one line is wanted here.
        lines = [line.strip() for problem in problems for line in problem.splitlines()]
        raise DatabaseError(damaged("; ".join(line for line in lines if line and not line.startswith("***"))))


def check_schema(db: sqlite_utils.Database) -> None:
    """For a read-only open: DatabaseError unless the file is a Ringside database at this schema."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise DatabaseError(
            f"made by a newer Ringside (schema {version}, this one knows {SCHEMA_VERSION}); upgrade Ringside"
        )
    if version == 0:
        raise DatabaseError("not a Ringside database (no schema version)")
    raise DatabaseError(
        f"schema {version}, older than this Ringside's {SCHEMA_VERSION}, and it is opened read-only: run a "
        "command that writes (such as once) on it with write access to upgrade it"
    )


def what_is_wrong(error: sqlite3.Error) -> str:
    """SQLite's error as the operator needs to read it."""
    name = getattr(error, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB":
        return f"not an SQLite database ({error})"
    if name.startswith("SQLITE_CORRUPT"):
        return damaged(str(error))
    if name.startswith("SQLITE_READONLY"):
        return f"read-only ({error}); {WRITES}"
    if name.startswith("SQLITE_CANTOPEN"):
        return f"cannot open the file ({error})"
    return str(error)


def damaged(detail: str) -> str:
    return f"damaged ({detail}); restore a backup, or save what is left with: sqlite3 THIS-FILE .recover"
