"""What an alert says: its payload (kept in the outbox row) and the helpers channels use to render it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from bot.models import MODEL_RULE, Hit, Post, span_rows
from bot.timeutil import iso, parse_datetime

PLATFORM_NAMES = {
    "x": "X",
    "instagram": "Instagram",
    "threads": "Threads",
    "bluesky": "Bluesky",
    "mastodon": "Mastodon",
    "rss": "RSS",
}
PAYLOAD_VERSION = 1
ICONS = {"challenge": "🥊", "rivalry": "⚔️", "taunt": "🗯️", "response": "↩️"}


def idempotency_key(post_key: str, rule_id: str) -> str:
    """Stable across retries, restarts and channels: derived only from what the alert is about."""
    digest = hashlib.sha256(f"{post_key}\x00{rule_id}".encode()).hexdigest()
    return f"rs1-{digest[:32]}"


def alert_payload(post: Post, hit: Hit) -> dict[str, Any]:
    """Everything a channel needs to render the alert, so delivery never has to read other tables."""
    return {
        "version": PAYLOAD_VERSION,
        "key": idempotency_key(post.key, hit.rule_id),
        "rule": {"id": hit.rule_id, "category": hit.category, "severity": hit.severity},
        "spans": span_rows(hit.spans),
        "decided_by": hit.rule_id,
        "probability": None if hit.probability is None else round(hit.probability, 3),
        "why": span_rows(hit.why),
        "post": {
            "key": post.key,
            "platform": post.platform,
            "id": post.id,
            "author": post.author,
            "url": post.url,
            "created_at": iso(post.created_at),
            "kind": post.kind,
            "lang": post.lang,
            "text": post.text,
        },
    }


def why_line(payload: dict[str, Any]) -> str | None:
    """What every channel shows of the decision.

    "why: 'name the day', 'your gym or mine' (model, p=0.93)" when the model decided;
    "why: 'cage match' (rule cage-fight, model p=0.64)" when a rule did. None for payloads from before the
    detector (no probability, no reasons)."""
    decided = payload.get("decided_by") or payload["rule"]["id"]
    p = payload.get("probability")
    if decided == MODEL_RULE:
        phrases = [term for _, _, term in payload.get("why") or []]
        return f"why: {_quoted(phrases)} (model, p={p:.2f})" if p is not None else None
    if p is None:
        return None
    terms = [term for _, _, term in payload.get("spans") or []]
    return f"why: {_quoted(terms)} (rule {decided}, model p={p:.2f})"


def _quoted(phrases: Sequence[str]) -> str:
    unique = list(dict.fromkeys(phrases))
    return ", ".join(f"'{phrase}'" for phrase in unique) or "-"


def highlight(
    text: str,
    spans: Sequence[Sequence[Any]],
    before: str,
    after: str,
    escape: Callable[[str], str] = str,
) -> str:
    """`text` with each [start, end) span wrapped in `before`/`after`; overlapping spans are merged. Each
    piece of the text goes through `escape` (the markers do not), so a channel's markup cannot come from a
    post."""
    merged: list[list[int]] = []
    for start, end, *_ in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, position = [], 0
    for start, end in merged:
        out += [escape(text[position:start]), before, escape(text[start:end]), after]
        position = end
    out.append(escape(text[position:]))
    return "".join(out)


def platform_name(platform: str) -> str:
    return PLATFORM_NAMES.get(platform, platform.capitalize())


def exchange_title(payload: dict[str, Any]) -> str:
    """ "Exchange · turn 3 · severity 5/5 · Elon Musk vs Mark Zuckerberg · escalating" """
    exchange = payload["exchange"]
    return (
        f"Exchange · turn {payload['turn']} · severity {exchange['severity']}/5 · "
        f"{' vs '.join(exchange['names'])} · {exchange['status']}"
    )


def exchange_follow_up(payload: dict[str, Any]) -> str | None:
    """For channels that cannot edit or thread: what this update follows."""
    if payload["turn"] <= 2:
        return None
    return (
        f"update to exchange {payload['thread']}: turn {payload['turn']} follows turn {payload['turn'] - 1}"
    )


WATCH_ICONS = {"frequency": "🔁", "spike": "📈", "silence": "🔇"}


def watch_title(payload: dict[str, Any]) -> str:
    """ "Spike · severity 4/5 · watch challenge-surge" """
    rule = payload["rule"]
    return f"{rule['category'].capitalize()} · severity {rule['severity']}/5 · watch {rule['id']}"


def watch_icon(payload: dict[str, Any]) -> str:
    return WATCH_ICONS.get(payload["rule"]["category"], "•")


def watch_window(payload: dict[str, Any]) -> str:
    """ "2026-11-24 18:00 UTC to 2026-11-26 18:00 UTC" """
    window = payload["window"]
    return f"{posted_at({'created_at': window['start']})} to {posted_at({'created_at': window['end']})}"


def one_line(text: str, limit: int = 200) -> str:
    """A post's text on one line, at most `limit` characters: a watch alert lists posts, it does not
    show them whole."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def notice_title(payload: dict[str, Any]) -> str:
    """The title of a watchdog notice: a feed failing or recovered, a channel paused (source "channel") or
    X's budget spent (source "budget")."""
    if payload.get("source") == "channel":
        return "Channel paused"
    if payload.get("source") == "budget":
        return "X budget reached"
    return "Source failing" if payload["state"] == "failing" else "Source recovered"


def icon(category: str) -> str:
    return ICONS.get(category, "•")


def posted_at(post: dict[str, Any]) -> str:
    """When a payload's post was posted, as every channel shows it: "2023-06-21 02:58 UTC"."""
    return parse_datetime(post["created_at"]).strftime("%Y-%m-%d %H:%M UTC")


def link_target(url: str | None) -> str | None:
    """The post's URL if a channel may link to it: http or https, with a host, and no space or control
    character. A feed supplies the URL, so anything else (javascript:, a Slack `<!channel>`) is no link."""
    if not url or any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # such as an unclosed [ in the host
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return url
