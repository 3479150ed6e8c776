"""Schema and migrations. `PRAGMA user_version` is the schema version; each migration moves it up by one.

A database made by an older Ringside is upgraded in place, in one transaction per step. A database from a
newer Ringside, or a file that is not a Ringside database, is refused rather than touched.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


class DatabaseError(Exception):
    """The database file cannot be used: not SQLite, not Ringside's, or from a newer version."""


def _v1_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE posts (
            key TEXT PRIMARY KEY,          -- platform:id, unique across platforms
            platform TEXT NOT NULL,
            id TEXT NOT NULL,              -- the platform's id (the first version for an edited post)
            version_id TEXT,               -- the newest version's id, for platforms with edits
            author TEXT NOT NULL,          -- handle, without @
            author_id TEXT,
            text TEXT NOT NULL,
            url TEXT,
            created_at TEXT NOT NULL,      -- ISO-8601 UTC
            lang TEXT,
            kind TEXT NOT NULL,            -- post, reply, quote, repost
            reply_to TEXT,                 -- platform id of the post this replies to
            quote_of TEXT,                 -- platform id of the post this quotes
            mentions TEXT NOT NULL,        -- JSON list of handles
            conversation_id TEXT,
            source TEXT NOT NULL,          -- the configured source that fetched it
            fetched_at TEXT NOT NULL,
            raw TEXT NOT NULL              -- the platform's JSON, kept for audit
        )
        """
    )
    db.execute("CREATE INDEX posts_author_created ON posts(platform, author, created_at)")
    db.execute("CREATE INDEX posts_created ON posts(created_at)")
    db.execute(
        """
        CREATE TABLE hits (
            id INTEGER PRIMARY KEY,
            post_key TEXT NOT NULL REFERENCES posts(key),
            rule_id TEXT NOT NULL,
            category TEXT NOT NULL,
            severity INTEGER NOT NULL,
            spans TEXT NOT NULL,           -- JSON list of [start, end, term] over the original text
            matched_at TEXT NOT NULL,
            UNIQUE (post_key, rule_id)
        )
        """
    )
    db.execute("CREATE INDEX hits_matched ON hits(matched_at)")
    db.execute(
        """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,        -- creation order, which is delivery order per channel
            channel TEXT NOT NULL,
            key TEXT NOT NULL,             -- idempotency key, stable across retries and restarts
            hit_id INTEGER REFERENCES hits(id),
            payload TEXT NOT NULL,         -- JSON: everything a channel needs to render the alert
            status TEXT NOT NULL DEFAULT 'pending',  -- pending, sent, dead, muted
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT,
            created_at TEXT NOT NULL,
            sent_at TEXT,
            UNIQUE (channel, key)
        )
        """
    )
    db.execute("CREATE INDEX alerts_due ON alerts(channel, status, id)")
    db.execute(
        """
        CREATE TABLE cursors (
            source TEXT NOT NULL,
            feed TEXT NOT NULL,            -- an account, a batch of accounts, or a whole replay file
            cursor TEXT,                   -- where the next poll starts (X: since_id)
            paused_until TEXT,             -- rate limited: no poll before this moment
            updated_at TEXT NOT NULL,
            PRIMARY KEY (source, feed)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE accounts (
            platform TEXT NOT NULL,
            username TEXT NOT NULL,        -- lower case, without @
            user_id TEXT NOT NULL,
            resolved_at TEXT NOT NULL,
            PRIMARY KEY (platform, username)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            feed TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT NOT NULL,
            fetched INTEGER NOT NULL DEFAULT 0,   -- posts returned by the platform (X bills these)
            new INTEGER NOT NULL DEFAULT 0,       -- posts not stored before
            hits INTEGER NOT NULL DEFAULT 0,      -- new hits
            error TEXT
        )
        """
    )
    db.execute("CREATE INDEX runs_feed ON runs(source, feed, started_at)")


def _v2_noise_control(db: sqlite_utils.Database) -> None:
    """Throttle, digests and mutes: alerts know their rule and author, count what folded into them."""
    db.execute("ALTER TABLE alerts ADD COLUMN rule_id TEXT")
    db.execute("ALTER TABLE alerts ADD COLUMN author TEXT")
    # Later hits of the same rule and author, within the throttle window, counted here instead of sent.
    db.execute("ALTER TABLE alerts ADD COLUMN folded INTEGER NOT NULL DEFAULT 0")
    # The digest message this alert goes out in (its idempotency key), fixed at the first attempt.
    db.execute("ALTER TABLE alerts ADD COLUMN digest_key TEXT")
    db.execute(
        "UPDATE alerts SET rule_id = json_extract(payload, '$.rule.id'), "
        "author = lower(json_extract(payload, '$.post.author'))"
    )
    db.execute("CREATE INDEX alerts_throttle ON alerts(channel, rule_id, author, created_at)")
    db.execute(
        """
        CREATE TABLE mutes (
            id INTEGER PRIMARY KEY,
            rule_id TEXT,                  -- mute this rule ...
            author TEXT,                   -- ... or this author (lower case, without @)
            until TEXT NOT NULL,           -- ISO-8601 UTC; hits stay stored, their alerts are 'muted'
            created_at TEXT NOT NULL,
            CHECK ((rule_id IS NULL) != (author IS NULL))
        )
        """
    )


def _v3_watchdog(db: sqlite_utils.Database) -> None:
    """A feed that keeps failing is reported once, and its recovery once, even across restarts."""
    db.execute(
        "ALTER TABLE cursors ADD COLUMN failing_since TEXT"
    )  # first failed poll since the last success
    db.execute("ALTER TABLE cursors ADD COLUMN watchdog_alerted INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX runs_success ON runs(source, feed, error, finished_at)")


def _v4_exchanges(db: sqlite_utils.Database) -> None:
    """Exchanges: a challenge and the answers that link to it, across accounts and platforms."""
    db.execute(
        """
        CREATE TABLE exchanges (
            id TEXT PRIMARY KEY,           -- the thread key: stable, derived from the first post
            people TEXT NOT NULL,          -- JSON list of the person ids taking part
            status TEXT NOT NULL,          -- open (2 turns), escalating (3 or more), cooled (quiet too long)
            severity INTEGER NOT NULL,     -- the first hit's severity, plus one per later turn, at most 5
            turns INTEGER NOT NULL,
            started_at TEXT NOT NULL,      -- when the first turn was posted
            updated_at TEXT NOT NULL       -- when the last turn was posted
        )
        """
    )
    db.execute(
        """
        CREATE TABLE exchange_turns (
            exchange_id TEXT NOT NULL REFERENCES exchanges(id),
            turn INTEGER NOT NULL,         -- 1 is the challenge
            post_key TEXT NOT NULL REFERENCES posts(key),
            person TEXT NOT NULL,
            link TEXT NOT NULL,            -- first, reply, quote, mention, response, counter
            PRIMARY KEY (exchange_id, turn),
            UNIQUE (exchange_id, post_key)
        )
        """
    )
    db.execute("CREATE INDEX exchange_turns_post ON exchange_turns(post_key)")
    db.execute("CREATE INDEX posts_platform_id ON posts(platform, id)")


def _v5_reports(db: sqlite_utils.Database) -> None:
    """Reports as views, full-text search over posts, and what report queries need to be fast."""
    db.execute("ALTER TABLE runs ADD COLUMN platform TEXT")  # x runs are billed per post read
    db.execute(
        "UPDATE runs SET platform = (SELECT p.platform FROM posts p WHERE p.source = runs.source LIMIT 1)"
    )
    db.execute("CREATE INDEX hits_rule ON hits(rule_id)")
    db.execute("CREATE INDEX hits_category ON hits(category)")
    db.execute("CREATE INDEX alerts_status ON alerts(channel, status)")
    # The report views themselves are made by refresh_views, at every open.
    # Diacritics folded like the matcher folds them: "pret" finds "prêt".
    db["posts"].enable_fts(
        ["text", "author"], create_triggers=True, tokenize="unicode61 remove_diacritics 2", replace=True
    )


def _v6_detector(db: sqlite_utils.Database) -> None:
    """What decided each hit (the model's probability and explanation) and the operator's verdicts."""
    db.execute("ALTER TABLE hits ADD COLUMN probability REAL")  # the scorer's P(flag); NULL without a model
    db.execute("ALTER TABLE hits ADD COLUMN why TEXT")  # JSON [[start, end, phrase]] that drove the score
    db.execute(
        """
        CREATE TABLE labels (
            post_key TEXT PRIMARY KEY,     -- one verdict per post; a new one replaces it
            label TEXT NOT NULL CHECK (label IN ('flag', 'none')),
            category TEXT,                 -- challenge, taunt, rivalry, response (flag) or none, coverage
            text TEXT NOT NULL,            -- the text judged, kept even if the post is pruned later
            lang TEXT,
            labelled_at TEXT NOT NULL,
            source TEXT NOT NULL           -- how it was given: cli, alert, slack...
        )
        """
    )


def _v7_versions_and_quarantine(db: sqlite_utils.Database) -> None:
    """A post fetched again with other text keeps every version, and each hit the version it matched; records
    a source could not use are kept apart instead of stopping their feed."""
    # Rows stored before this schema have no history: their one known text is version 1.
    db.execute("ALTER TABLE posts ADD COLUMN version INTEGER NOT NULL DEFAULT 1")  # the current version
    db.execute("ALTER TABLE hits ADD COLUMN version INTEGER NOT NULL DEFAULT 1")  # the version it matched
    db.execute(
        """
        CREATE TABLE post_versions (
            post_key TEXT NOT NULL REFERENCES posts(key),
            version INTEGER NOT NULL,      -- 1, 2, ...: each distinct text, in the order first seen
            version_id TEXT,               -- the platform's id of that version (X edits)
            text TEXT NOT NULL,
            raw TEXT NOT NULL,             -- the platform's JSON when the version was first seen
            first_seen TEXT NOT NULL,
            PRIMARY KEY (post_key, version)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            feed TEXT NOT NULL,
            digest TEXT NOT NULL,          -- sha256 of `record`: a record seen again is kept once
            record TEXT NOT NULL,          -- as received: JSON, or the line of text; lone surrogates escaped
            error TEXT NOT NULL,
            first_seen TEXT NOT NULL,
            UNIQUE (source, feed, digest)
        )
        """
    )
    db.execute("CREATE INDEX quarantine_seen ON quarantine(first_seen)")


def _v8_index_per_poll(db: sqlite_utils.Database) -> None:
    """New posts enter the full-text index by one statement per poll (Store._save_posts) instead of a trigger
    per row: 3-4x faster (bench/store.py). Edits and deletes keep their triggers: edits are rare, and prune
    deletes in SQL. The index is rebuilt from the posts, so it starts exact whatever happened before."""
    db.execute("DROP TRIGGER IF EXISTS posts_ai")
    db.execute("INSERT INTO posts_fts (posts_fts) VALUES ('rebuild')")


def _slack_app(db: sqlite_utils.Database) -> None:
    """The Slack app channel: where each alert's message is (so its buttons find it, and an alert whose
    message was posted just before a crash is not posted again), each exchange's thread per channel, and what
    people did with the buttons (who, when)."""
    db.execute(
        """
        CREATE TABLE slack_messages (
            alert_id INTEGER PRIMARY KEY REFERENCES alerts(id),
            channel_id TEXT NOT NULL,      -- Slack's id of the conversation (C0123...), as chat.update needs
            ts TEXT NOT NULL,              -- the message's timestamp: Slack's id for it
            thread_ts TEXT,                -- the parent's ts, for a reply in an exchange's thread
            posted_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX slack_messages_at ON slack_messages(channel_id, ts)")  # a button finds its alert
    db.execute(
        """
        CREATE TABLE slack_threads (
            channel TEXT NOT NULL,         -- the configured channel's name
            exchange_id TEXT NOT NULL,     -- the exchange (its thread key, ex-...)
            parent_alert_id INTEGER NOT NULL REFERENCES alerts(id),  -- the alert that opened the thread
            latest_alert_id INTEGER NOT NULL REFERENCES alerts(id),  -- the newest turn, the parent shows
            channel_id TEXT NOT NULL,
            ts TEXT NOT NULL,              -- the parent message's ts: later turns reply to it
            PRIMARY KEY (channel, exchange_id)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE alert_actions (
            alert_id INTEGER NOT NULL REFERENCES alerts(id),
            action TEXT NOT NULL CHECK (action IN ('not_a_challenge', 'mute_rule', 'acknowledge')),
            user_id TEXT NOT NULL,         -- who pressed the button (Slack's user id, U0123...)
            user_name TEXT,                -- their Slack name, when the payload says it
            at TEXT NOT NULL,              -- ISO-8601 UTC
            PRIMARY KEY (alert_id, action)
        )
        """
    )


def _x_spend_ledger(db: sqlite_utils.Database) -> None:
    """The X spend ledger: X bills each post it returns once per UTC day. `x_reads` holds the ids read on a
    day, so a post read again that day is not counted twice (Store prunes days that have ended);
    `x_read_totals` keeps how many posts each feed was billed for each day, forever."""
    db.execute(
        """
        CREATE TABLE x_reads (
            day TEXT NOT NULL,             -- UTC date, YYYY-MM-DD
            post_id TEXT NOT NULL,         -- the id of a post object X returned that day
            PRIMARY KEY (day, post_id)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        """
        CREATE TABLE x_read_totals (
            day TEXT NOT NULL,             -- UTC date, YYYY-MM-DD
            source TEXT NOT NULL,
            feed TEXT NOT NULL,
            posts INTEGER NOT NULL,        -- posts billed: first read that day by any feed
            PRIMARY KEY (day, source, feed)
        )
        """
    )


def _watches(db: sqlite_utils.Database) -> None:
    """Frequency, spike and silence watches: whether each is firing (so it alerts once per episode, and again
    only after it cleared or its throttle passed), and indexes for their queries (bench/watches.py)."""
    db.execute(
        """
        CREATE TABLE watch_state (
            name TEXT PRIMARY KEY,         -- the watch's name in the settings
            firing_since TEXT,             -- when the current episode began; NULL: not firing
            alerts INTEGER NOT NULL DEFAULT 0,  -- alerts made in the current episode (1, then reminders)
            last_alert_at TEXT,            -- when the watch last alerted, kept after it clears (throttle)
            last_key TEXT,                 -- that alert's idempotency key
            checked_at TEXT NOT NULL       -- the last evaluation
        )
        """
    )
    # Posts of one account in a time range (frequency, silence): authors are matched without case.
    db.execute("CREATE INDEX posts_account_created ON posts(platform, lower(author), created_at)")
    # A spike counts the posts of a week with a hit of one category: these two indexes cover that query,
    # which otherwise reads each post's row (about 15x slower on a million posts, bench/watches.py). The new
    # one serves every query posts_created(created_at) served, so it replaces it: one index less to write.
    db.execute("CREATE INDEX posts_created_key ON posts(created_at, key)")
    db.execute("DROP INDEX posts_created")
    db.execute("CREATE INDEX hits_post_category ON hits(post_key, category)")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1_initial,
    _v2_noise_control,
    _v3_watchdog,
    _v4_exchanges,
    _v5_reports,
    _v6_detector,
    _v7_versions_and_quarantine,
    _v8_index_per_poll,
    _slack_app,
    _x_spend_ledger,
    _watches,
]
SCHEMA_VERSION = len(MIGRATIONS)
_OUR_TABLES = {"posts", "hits", "alerts", "cursors", "accounts", "runs", "mutes", "exchanges", "labels"}


def migrate(
    db: sqlite_utils.Database, migrations: list[Callable[[sqlite_utils.Database], None]] = MIGRATIONS
) -> int:
    """Bring `db` to the newest schema; return the version it had. Each step commits on its own."""
    newest = len(migrations)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = set(db.table_names())
    except Exception as error:  # sqlite3.DatabaseError: "file is not a database"
        raise DatabaseError(f"not an SQLite database ({error})") from None
    if version > newest:
        raise DatabaseError(
            f"made by a newer Ringside (schema {version}, this one knows {newest}); upgrade Ringside"
        )
    if version == 0 and tables and not tables & _OUR_TABLES:
        raise DatabaseError(f"not a Ringside database (it has tables: {', '.join(sorted(tables)[:5])})")
    for step in range(version, newest):
        # IMMEDIATE takes the write lock first: another process opening the same file at the same moment
        # waits, then finds the step done instead of running it twice.
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] == step:
                migrations[step](db)
                db.execute(f"PRAGMA user_version = {step + 1}")
            db.conn.execute("COMMIT")
        except BaseException:
            db.conn.execute("ROLLBACK")
            raise
    refresh_views(db)
    return version


def refresh_views(db: sqlite_utils.Database) -> None:
    """Make each report's view match the code. Views hold no data, so changing a report needs no migration:
    a view whose SQL differs (or that is missing) is replaced, and nothing is written when all agree."""
    from storage.reports import REPORTS, view_sql

    wanted = {report.view: view_sql(report) for report in REPORTS.values()}
    stored = dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'view'").fetchall())
    if all(stored.get(name) == sql for name, sql in wanted.items()):
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        for name, sql in wanted.items():
            db.execute(f"DROP VIEW IF EXISTS {name}")
            db.execute(sql)
        db.conn.execute("COMMIT")
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
