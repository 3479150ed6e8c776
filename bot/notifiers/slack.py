"""Slack: an incoming webhook, a Block Kit message, a plain `text` fallback, within Slack's limits.

Limits: a section's text at most 3,000 characters, a header's 150, at most 50 blocks in a message; Slack
accepts about one message per second per webhook (the channel's min_interval, 1s by default).
"""

from __future__ import annotations

from typing import Any

import requests

from bot.alerts import (
    exchange_follow_up,
    exchange_title,
    highlight,
    icon,
    platform_name,
    posted_at,
    why_line,
)
from bot.notifiers import http
from bot.redact import Redactor
from config import ChannelConfig
from storage.store import Alert

SECTION_LIMIT = 3000
HEADER_LIMIT = 150
BLOCK_LIMIT = 50
_OPEN, _CLOSE = "\x00", "\x01"  # bold markers placed before escaping, so escaping cannot touch them


class SlackNotifier:
    def __init__(
        self,
        name: str,
        url: str,
        timeout: float = 10.0,
        min_interval: float = 1.0,
        session: requests.Session | None = None,
    ) -> None:
        self.name = name
        self._url = url
        self.timeout = timeout
        self.min_interval = min_interval
        self.session = session or http.session()
        self._redact = Redactor([url])

    @classmethod
    def from_config(cls, config: ChannelConfig) -> SlackNotifier:
        return cls(
            config.name,
            config.secrets["url"].reveal(),
            config.options["timeout"],
            config.options["min_interval"],
        )

    def send(self, alert: Alert) -> None:
        body = http.json_body(slack_message(alert))
        response = http.post(
            self.session, self._url, body, {"Content-Type": "application/json"}, self.timeout
        )
        http.check(response, receiver="Slack", redact=self._redact)


def slack_message(alert: Alert) -> dict[str, Any]:
    """The Block Kit message for an alert or a digest of alerts."""
    payload = alert.payload
    if payload.get("kind") == "watchdog":
        title = "⚠️ Source failing" if payload["state"] == "failing" else "✅ Source recovered"
        return {
            "text": _escape(payload["text"]),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title}},
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": _truncate(_escape(payload["text"]), 3000)},
                },
            ],
        }
    if payload.get("kind") == "exchange":
        return _exchange_message(payload)
    if payload.get("kind") == "digest":
        return _digest_message(payload["alerts"])
    blocks = [_header(payload), *_alert_blocks(payload, alert.folded)]
    return {"text": _fallback(payload), "blocks": blocks}


def _digest_message(items: list[dict[str, Any]]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Ringside digest: {len(items)} alerts"}}
    ]
    shown = 0
    for item in items:
        if len(blocks) + 2 > BLOCK_LIMIT - 1:
            break
        blocks += _alert_blocks(item["payload"], item.get("folded", 0), title=True)
        shown += 1
    if shown < len(items):
        blocks.append(_context(f"…and {len(items) - shown} more (see `run_bot.py report latest-hits`)"))
    text = f"Ringside digest: {len(items)} alerts. " + " | ".join(_fallback(i["payload"]) for i in items)
    return {"text": _truncate(text, SECTION_LIMIT), "blocks": blocks}


def _exchange_message(payload: dict[str, Any]) -> dict[str, Any]:
    """The whole exchange in one message. Incoming webhooks cannot edit or thread, so a later turn is a
    follow-up that names the exchange and the turn it follows."""
    title = "🔥 " + exchange_title(payload)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _truncate(title, HEADER_LIMIT)}},
        _context(
            f"thread `{payload['thread']}`"
            + (f" · {exchange_follow_up(payload)}" if exchange_follow_up(payload) else "")
        ),
    ]
    posts = payload["exchange"]["posts"]
    shown = posts[-((BLOCK_LIMIT - 3) // 2) :]  # the latest turns, if a long exchange outgrows 50 blocks
    if len(shown) < len(posts):
        blocks.append(_context(f"…{len(posts) - len(shown)} earlier turns"))
    for item in shown:
        post = item["post"]
        when = posted_at(post)
        who = (
            f"*{item['turn']}. {_escape(item['name'])}* · @{_escape(post['author'])} on "
            f"{platform_name(post['platform'])} · {when}"
        )
        if post.get("url"):
            who += f" · <{post['url']}|open>"
        blocks.append(_context(who))
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": bold_spans(post["text"], item["spans"])}}
        )
    text = exchange_title(payload) + ": " + " / ".join(f"{i['name']}: {i['post']['text']}" for i in posts)
    return {"text": _truncate(_escape(text), SECTION_LIMIT), "blocks": blocks}


def _header(payload: dict[str, Any]) -> dict[str, Any]:
    rule = payload["rule"]
    text = f"{icon(rule['category'])} {rule['category'].capitalize()} · severity {rule['severity']}/5"
    return {"type": "header", "text": {"type": "plain_text", "text": _truncate(text, HEADER_LIMIT)}}


def _alert_blocks(payload: dict[str, Any], folded: int, title: bool = False) -> list[dict[str, Any]]:
    post, rule = payload["post"], payload["rule"]
    when = posted_at(post)
    who = f"*@{_escape(post['author'])}* on {platform_name(post['platform'])} · {when}"
    if post.get("kind") not in (None, "post"):
        who += f" · {post['kind']}"
    if title:
        who = f"{icon(rule['category'])} *{rule['category']}* {rule['severity']}/5 · " + who
    footer = f"rule `{_escape(rule['id'])}`"
    why = why_line(payload)
    if why:
        footer += f" · {_escape(why)}"
    if post.get("url"):
        footer += f" · <{post['url']}|open the post>"
    if folded:
        footer += f" · +{folded} more like this from @{_escape(post['author'])}"
    section = {
        "type": "section",
        "text": {"type": "mrkdwn", "text": bold_spans(post["text"], payload["spans"])},
    }
    return [_context(who), section, _context(footer)]


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _truncate(text, SECTION_LIMIT)}]}


def bold_spans(text: str, spans: list[list[Any]]) -> str:
    """The post text as Slack mrkdwn: escaped, matched spans in bold, at most 3,000 characters."""
    marked = _escape(highlight(text, spans, _OPEN, _CLOSE))
    if len(marked) > SECTION_LIMIT:
        marked = marked[: SECTION_LIMIT - 2]
        if "&" in marked[-5:] and ";" not in marked[marked.rindex("&") :]:
            marked = marked[: marked.rindex("&")]  # never cut an entity such as &amp; in half
        if marked.count(_OPEN) > marked.count(_CLOSE):
            marked += _CLOSE
        marked += "…"
    return marked.replace(_OPEN, "*").replace(_CLOSE, "*")


def _fallback(payload: dict[str, Any]) -> str:
    post, rule = payload["post"], payload["rule"]
    where = platform_name(post["platform"])
    text = f"{rule['category'].capitalize()} by @{post['author']} on {where}: {post['text']}"
    return _truncate(_escape(text), SECTION_LIMIT)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
