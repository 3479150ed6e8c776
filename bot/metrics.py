"""Prometheus metrics (prometheus-client), in one registry that the /metrics endpoint serves.

Counters are bumped where the work happens. The gauges of stored state (the outbox backlog, dead alerts) are
set by each channel's deliver job from the database, so they are right after a restart from its first run
on; a scrape reads only memory and never waits for the database.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

POSTS_FETCHED = Counter(
    "ringside_posts_fetched", "Posts returned by sources (X bills these)", ["source"], registry=REGISTRY
)
POSTS_NEW = Counter("ringside_posts_new", "Posts not stored before", ["source"], registry=REGISTRY)
HITS = Counter("ringside_hits", "New hits, by rule category", ["category"], registry=REGISTRY)
POLLS = Counter(
    "ringside_polls", "Polls by outcome (ok, failed, rate_limited)", ["source", "outcome"], registry=REGISTRY
)
POLL_SECONDS = Histogram(
    "ringside_poll_duration_seconds",
    "Time to fetch, match and store one feed",
    ["source"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ALERTS = Counter(
    "ringside_alerts",
    "Delivery attempts by outcome (sent, failed, dead)",
    ["channel", "outcome"],
    registry=REGISTRY,
)
RELOADS = Counter(
    "ringside_reloads",
    "Reloads of the settings and rules, by outcome (applied, refused: the running version went on)",
    ["outcome"],
    registry=REGISTRY,
)
X_REQUESTS = Counter(
    "ringside_x_requests",
    "Requests made to the X API, by outcome (ok, rate_limited, error)",
    ["outcome"],
    registry=REGISTRY,
)
X_POSTS_READ = Counter(
    "ringside_x_posts_read", "Posts read from the X API (billed per post)", registry=REGISTRY
)
X_POSTS_BILLED = Counter(
    "ringside_x_posts_billed",
    "Posts X bills for: each post it returned, once per UTC day (the spend ledger)",
    ["source"],
    registry=REGISTRY,
)
X_SPEND = Gauge(
    "ringside_x_spend_dollars",
    "X spend in US dollars this UTC day or month, from the ledger at the configured price",
    ["period"],
    registry=REGISTRY,
)
X_BUDGET = Gauge(
    "ringside_x_budget_dollars", "The X budget per UTC day or month, when set", ["period"], registry=REGISTRY
)
OUTBOX_BACKLOG = Gauge("ringside_outbox_backlog", "Alerts waiting to be sent", ["channel"], registry=REGISTRY)
ALERTS_DEAD = Gauge(
    "ringside_alerts_dead", "Alerts given up on (retry-dead requeues)", ["channel"], registry=REGISTRY
)
CHANNEL_PAUSED = Gauge(
    "ringside_channel_paused",
    "1 while a channel is paused (it refused every alert; `alerts resume` sends what it kept)",
    ["channel"],
    registry=REGISTRY,
)
