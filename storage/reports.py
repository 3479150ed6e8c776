"""Reports: named SQL queries, each also a view in the database, so the CLI and any SQLite client agree.

Each report is SQL with a `{where}` slot. The view is the report with no filter (`1 = 1`); the command line
fills the slot with parameterised conditions (since, until, account), never with text from the user.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlite_utils

from bot.models import parse_account
from bot.timeutil import iso, utcnow

X_PRICE_PER_POST = 0.005  # US dollars per post read from the X API (2026 pay-per-use): the views' price
# Posts one feed was billed for on the days `days` selects (SQL over `day`), from the X spend ledger.
_BILLED = (
    "(SELECT sum(t.posts) FROM x_read_totals t "
    "WHERE t.source = r.source AND t.feed = r.feed AND t.day {days})"
)


@dataclass(frozen=True)
class Chart:
    """A report whose rows are (day, series, value, ...): one row per day and series that has hits."""

    series: str  # the column that names a bar's part (a category, a rivalry)
    value: str  # the column the bars measure
    title: str  # the line above the bars


@dataclass(frozen=True)
class Report:
    name: str
    view: str
    description: str
    sql: str
    time_column: str  # what --since/--until filter on
    account_condition: str | None  # what --account filters on: SQL reading :platform (or NULL) and :handle
    order: str = ""
    json_columns: tuple[str, ...] = ()  # stored as JSON text, given back as lists
    chart: Chart | None = None  # a report by day that the terminal draws as bars


# --account is compared, never matched as a LIKE pattern: `%` and `_` are plain characters in a handle.
_POST_BY = "lower(p.author) = :handle AND (:platform IS NULL OR p.platform = :platform)"
_ALERT_FOR = (  # alerts keep the author in lower case; the platform is in the payload's post
    "a.author = :handle AND (:platform IS NULL OR json_extract(a.payload, '$.post.platform') = :platform)"
)
_RUN_OF = (  # a feed by its name as written (an X batch is "batch:a,b"), or the account it polls
    "(lower(r.feed) = :account "
    "OR (lower(r.feed) = :handle AND (:platform IS NULL OR r.platform = :platform)))"
)
_EXCHANGE_WITH = (  # a person's id, or an account that took a turn
    "((:platform IS NULL AND EXISTS (SELECT 1 FROM json_each(x.people) WHERE lower(value) = :handle)) "
    "OR EXISTS (SELECT 1 FROM exchange_turns t JOIN posts p ON p.key = t.post_key "
    "WHERE t.exchange_id = x.id AND " + _POST_BY + "))"
)

REPORTS = {
    report.name: report
    for report in [
        Report(
            "hits-by-day",
            "hits_by_day",
            "Hits per day (of the post) per category; bars on a terminal",
            """SELECT date(p.created_at) AS day, h.category, count(*) AS hits
               FROM hits h JOIN posts p ON p.key = h.post_key WHERE {where}
               GROUP BY day, h.category""",
            "p.created_at",
            _POST_BY,
            "ORDER BY day, hits DESC, category",
            chart=Chart("category", "hits", "Hits per day (of the post) per category"),
        ),
        Report(
            "rivalry-hits-by-day",
            "rivalry_hits_by_day",
            "Hits per day (of the post) per rivalry: the exchanges' people; bars on a terminal",
            # A rivalry is the people of an exchange ("musk vs zuck"); its hits are those of the posts that
            # are its turns. A turn linked without a hit of its own (a mention) counts in turns only.
            """SELECT date(p.created_at) AS day,
                      (SELECT group_concat(value, ' vs ') FROM json_each(x.people)) AS rivalry,
                      count(DISTINCT h.id) AS hits, count(DISTINCT t.post_key) AS turns
               FROM exchange_turns t JOIN exchanges x ON x.id = t.exchange_id
               JOIN posts p ON p.key = t.post_key LEFT JOIN hits h ON h.post_key = t.post_key
               WHERE {where}
               GROUP BY day, rivalry""",
            "p.created_at",
            _POST_BY,
            "ORDER BY day, hits DESC, rivalry",
            chart=Chart("rivalry", "hits", "Hits per day (of the post) per rivalry"),
        ),
        Report(
            "top-accounts",
            "top_accounts",
            "Accounts with the most hits (rules' silent responses and vetoes left out)",
            """SELECT p.platform, p.author, count(*) AS hits, count(DISTINCT h.post_key) AS posts,
                      max(p.created_at) AS last_hit
               FROM hits h JOIN posts p ON p.key = h.post_key
               WHERE (h.rule_id = 'model' OR h.category NOT IN ('response', 'veto')) AND {where}
               GROUP BY p.platform, p.author""",
            "p.created_at",
            _POST_BY,
            "ORDER BY hits DESC, last_hit DESC",
        ),
        Report(
            "top-rules",
            "top_rules",
            "Rules by how often they matched",
            """SELECT h.rule_id AS rule, h.category, count(*) AS hits, max(p.created_at) AS last_hit
               FROM hits h JOIN posts p ON p.key = h.post_key WHERE {where}
               GROUP BY h.rule_id, h.category""",
            "p.created_at",
            _POST_BY,
            "ORDER BY hits DESC, rule",
        ),
        Report(
            "categories",
            "categories",
            "Hits and posts per category",
            """SELECT h.category, count(*) AS hits, count(DISTINCT h.post_key) AS posts,
                      count(DISTINCT p.platform || ':' || p.author) AS accounts
               FROM hits h JOIN posts p ON p.key = h.post_key WHERE {where}
               GROUP BY h.category""",
            "p.created_at",
            _POST_BY,
            "ORDER BY hits DESC",
        ),
        Report(
            "latest-hits",
            "latest_hits",
            "The newest hits: what decided them (a rule or the model), probability, the text matched, link",
            """SELECT p.created_at, p.key AS post_key, p.author, h.rule_id AS rule, h.category, h.severity,
                      round(h.probability, 2) AS probability, coalesce(v.text, p.text) AS text, p.url
               FROM hits h JOIN posts p ON p.key = h.post_key
               LEFT JOIN post_versions v ON v.post_key = h.post_key AND v.version = h.version
               WHERE {where}""",
            "p.created_at",
            _POST_BY,
            "ORDER BY p.created_at DESC, h.id DESC",
        ),
        Report(
            "alerts",
            "alerts_by_channel",
            "The outbox per channel: pending, sent, dead, muted; acknowledged in Slack; the last error",
            """SELECT a.channel, sum(a.status = 'pending') AS pending, sum(a.status = 'sent') AS sent,
                      sum(a.status = 'dead') AS dead, sum(a.status = 'muted') AS muted,
                      sum(a.folded) AS folded,
                      sum(EXISTS (SELECT 1 FROM alert_actions k
                                  WHERE k.alert_id = a.id AND k.action = 'acknowledge')) AS acknowledged,
                      (SELECT last_error FROM alerts e
                       WHERE e.channel = a.channel AND e.last_error IS NOT NULL
                       ORDER BY e.id DESC LIMIT 1) AS last_error
               FROM alerts a WHERE {where}
               GROUP BY a.channel""",
            "a.created_at",
            _ALERT_FOR,
            "ORDER BY a.channel",
        ),
        Report(
            "source-health",
            "source_health",
            "Per source and feed: platform, last poll and success, posts, errors, X posts read; X posts "
            "billed today, spend today and this month (UTC), budgets; failing since, rate-limited until",
            """SELECT r.source, r.feed, max(r.platform) AS platform, max(r.finished_at) AS last_poll,
                      max(CASE WHEN r.error IS NULL THEN r.finished_at END) AS last_success,
                      count(*) AS polls, sum(r.error IS NOT NULL) AS errors,
                      sum(r.fetched) AS fetched, sum(r.new) AS new_posts,
                      sum(CASE WHEN r.platform = 'x' THEN r.fetched ELSE 0 END) AS x_posts_read,
                      """
            + _BILLED.format(days="= date('now')")
            + """ AS x_billed_today,
                      round("""
            + _BILLED.format(days="= date('now')")
            + """ * {x_price}, 4) AS x_spend_today_usd,
                      round("""
            + _BILLED.format(days=">= strftime('%Y-%m-01', 'now')")
            + """ * {x_price}, 4) AS x_spend_month_usd,
                      CASE WHEN max(r.platform) = 'x' THEN {x_budget_day} END AS x_budget_day_usd,
                      CASE WHEN max(r.platform) = 'x' THEN {x_budget_month} END AS x_budget_month_usd,
                      (SELECT error FROM runs e WHERE e.source = r.source AND e.feed = r.feed
                       ORDER BY e.id DESC LIMIT 1) AS last_error,
                      (SELECT failing_since FROM cursors c WHERE c.source = r.source AND c.feed = r.feed)
                        AS failing_since,
                      (SELECT paused_until FROM cursors c WHERE c.source = r.source AND c.feed = r.feed
                       AND c.paused_until > strftime('%Y-%m-%dT%H:%M:%f', 'now')) AS paused_until
               FROM runs r WHERE {where}
               GROUP BY r.source, r.feed""",
            "r.started_at",
            _RUN_OF,
            "ORDER BY r.source, r.feed",
        ),
        Report(
            "x-spend",
            "x_spend",
            "X posts billed and their cost per UTC day and feed (each post once a day, as X bills)",
            """SELECT t.day, t.source, t.feed, t.posts, round(t.posts * {x_price}, 4) AS usd
               FROM x_read_totals t WHERE {where}""",
            "t.day || 'T23:59:59.999+00:00'",  # a day is in --since/--until when its last moment is
            "(lower(t.feed) = :account OR lower(t.feed) = :handle)",
            "ORDER BY t.day DESC, t.source, t.feed",
        ),
        Report(
            "exchanges",
            "exchanges_report",
            "Exchanges: people, status, severity, turns, first and last words",
            """SELECT x.id, x.people, x.status, x.severity, x.turns, x.started_at, x.updated_at,
                      (SELECT p.text FROM exchange_turns t JOIN posts p ON p.key = t.post_key
                       WHERE t.exchange_id = x.id ORDER BY t.turn LIMIT 1) AS first_text,
                      (SELECT p.text FROM exchange_turns t JOIN posts p ON p.key = t.post_key
                       WHERE t.exchange_id = x.id ORDER BY t.turn DESC LIMIT 1) AS last_text
               FROM exchanges x WHERE {where}""",
            "x.updated_at",
            _EXCHANGE_WITH,
            "ORDER BY x.updated_at DESC",
            json_columns=("people",),
        ),
        Report(
            "quarantine",
            "quarantine_report",
            "Records a source could not use: when first seen, source and feed, why, the record as received",
            """SELECT q.first_seen, q.source, q.feed, q.error, q.record FROM quarantine q WHERE {where}""",
            "q.first_seen",
            "(lower(q.feed) = :account OR lower(q.source) = :account)",  # a feed or a source, by name
            "ORDER BY q.first_seen DESC, q.id DESC",
        ),
    ]
}


def view_sql(report: Report) -> str:
    """A report as a view: no filter, X spend at the default price, no budget (a view cannot read the
    settings; the report command can)."""
    sql = report.sql.format(
        where="1 = 1", x_price=X_PRICE_PER_POST, x_budget_day="NULL", x_budget_month="NULL"
    )
    return f"CREATE VIEW {report.view} AS {sql} {report.order}"


class QueryError(Exception):
    """A search query SQLite's full-text index cannot read; the message says why."""


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[tuple]


class ReportStore:
    """Report, search and retention queries, mixed into Store."""

    db: sqlite_utils.Database
    lock: threading.RLock

    def report(
        self,
        name: str,
        since: datetime | None = None,
        until: datetime | None = None,
        account: str | None = None,
        limit: int | None = None,
        x_price: float = X_PRICE_PER_POST,
        x_budgets: tuple[float | None, float | None] = (None, None),
    ) -> Table:
        """Run report `name` (a key of REPORTS), filtered by time and account through parameters only.

        `account` takes the forms rules take ("elonmusk", "@elonmusk", "x:elonmusk"); ValueError otherwise.
        X spend is priced at `x_price` dollars a post; `x_budgets` are the budgets per day and per month."""
        report = REPORTS[name]
        conditions: list[str] = ["1 = 1"]
        params: dict[str, Any] = {
            "x_price": x_price,
            "x_budget_day": x_budgets[0],
            "x_budget_month": x_budgets[1],
        }
        if since is not None:
            conditions.append(f"{report.time_column} >= :since")
            params["since"] = iso(since)
        if until is not None:
            conditions.append(f"{report.time_column} < :until")
            params["until"] = iso(until)
        if account is not None and report.account_condition:
            conditions.append(report.account_condition)
            params["platform"], params["handle"] = parse_account(account)
            params["account"] = account.strip().lower()
        slots = {"x_price": ":x_price", "x_budget_day": ":x_budget_day", "x_budget_month": ":x_budget_month"}
        sql = f"{report.sql.format(where=' AND '.join(conditions), **slots)} {report.order}"
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        with self.lock:
            cursor = self.db.execute(sql, params)
            columns, rows = [d[0] for d in cursor.description], cursor.fetchall()
        return Table(columns, _decode_json(columns, rows, report.json_columns))

    def feed_health(self, source: str, feed: str) -> dict[str, Any]:
        """One feed's last poll, last success, last error and since when it fails, for /healthz: indexed
        look-ups, as quick with millions of poll records as with ten (source-health reads them all)."""
        where = [source, feed]
        with self.lock:
            last = self.db.execute(
                "SELECT finished_at, error FROM runs WHERE source = ? AND feed = ? ORDER BY started_at DESC "
                "LIMIT 1",
                where,
            ).fetchone()
            (success,) = self.db.execute(
                "SELECT max(finished_at) FROM runs WHERE source = ? AND feed = ? AND error IS NULL", where
            ).fetchone()
            failing = self.db.execute(
                "SELECT failing_since FROM cursors WHERE source = ? AND feed = ?", where
            ).fetchone()
        return {
            "source": source,
            "feed": feed,
            "last_poll": last[0] if last else None,
            "last_success": success,
            "last_error": last[1] if last else None,
            "failing_since": failing[0] if failing else None,
        }

    def search(self, query: str, since: datetime | None = None, limit: int = 50) -> Table:
        """Posts whose text or author match a full-text query (SQLite FTS5), best first. A query longer than
        SEARCH_MAX_QUERY characters is refused (QueryError)."""
        if len(query) > SEARCH_MAX_QUERY:
            raise QueryError(
                f"search: the query is {len(query):,} characters long; at most {SEARCH_MAX_QUERY:,}"
            )
        sql = (
            "SELECT p.created_at, p.platform, p.author, "
            "snippet(posts_fts, 0, '**', '**', '…', 16) AS text, p.url "
            "FROM posts_fts JOIN posts p ON p.rowid = posts_fts.rowid WHERE posts_fts MATCH ? "
            + ("AND p.created_at >= ? " if since else "")
            + "ORDER BY rank LIMIT ?"
        )
        params = [fts_query(query), *([iso(since)] if since else []), limit]
        with self.lock:
            try:
                cursor = self.db.execute(sql, params)
                return Table([d[0] for d in cursor.description], cursor.fetchall())
            except sqlite3.OperationalError as error:
                raise QueryError(f"search {query!r}: {error}") from None

    def prune(self, older_than: timedelta, vacuum: bool = False) -> dict[str, int]:
        """Delete posts older than `older_than` that have no hit and are no exchange turn; hits, their posts,
        exchanges and alerts stay. Returns what was removed."""
        cutoff = iso(utcnow() - older_than)
        with self.lock:
            with self.db.atomic():
                posts = self.db.execute(
                    "DELETE FROM posts WHERE created_at < ? AND NOT EXISTS (SELECT 1 FROM hits h "
                    "WHERE h.post_key = posts.key) AND NOT EXISTS (SELECT 1 FROM exchange_turns t "
                    "WHERE t.post_key = posts.key)",
                    [cutoff],
                ).rowcount
                self.db.execute(
                    "DELETE FROM post_versions WHERE NOT EXISTS "
                    "(SELECT 1 FROM posts p WHERE p.key = post_versions.post_key)"
                )
                runs = self.db.execute("DELETE FROM runs WHERE started_at < ?", [cutoff]).rowcount
            if vacuum:
                self.db.vacuum()
        return {"posts": posts, "runs": runs}


def _decode_json(columns: list[str], rows: list[tuple], json_columns: tuple[str, ...]) -> list[tuple]:
    positions = [columns.index(name) for name in json_columns]
    if not positions:
        return rows
    return [
        tuple(json.loads(v) if i in positions and v is not None else v for i, v in enumerate(row))
        for row in rows
    ]


# A search is typed by a person; a longer query is a mistake or an attack, and FTS5 would parse all of it.
SEARCH_MAX_QUERY = 1_000
# `(?<!\S)`: a left operand starts only where a word starts. Without it, a word with no NEAR after it was
# tried again from each of its characters, each try reading to its end: quadratic in the word's length.
# An operand is a quoted phrase or a bare word: `"send me" NEAR location` keeps its phrase whole.
_OPERAND = r'("[^"]*"|[^\s"]+)'
_NEAR = re.compile(rf"(?<!\S){_OPERAND}\s+NEAR(?:/(\d+))?\s+{_OPERAND}")


def fts_query(query: str) -> str:
    """The rule language's `a NEAR/n b` in FTS5's spelling, NEAR(a b, n); the rest as FTS5 reads it."""
    return _NEAR.sub(lambda m: f"NEAR({m.group(1)} {m.group(3)}, {m.group(2) or 10})", query)
