"""Datasette plugin: the SQL function fts_query(text), so the search page reads a query as the CLI does.

Loaded with `datasette ... --plugins-dir config/datasette_plugins`; it needs Ringside installed beside
Datasette (`pip install '.[datasette]'`), since the translation is the CLI's own (storage.reports.fts_query).
"""

from __future__ import annotations

import sqlite3

from datasette import hookimpl

from storage.reports import fts_query


@hookimpl
def prepare_connection(conn: sqlite3.Connection) -> None:
    conn.create_function("fts_query", 1, fts_query, deterministic=True)
