"""Slack: an incoming webhook, a Block Kit message, a plain `text` fallback, within Slack's limits.

Limits: a section's text at most 3,000 characters, a header's 150, at most 50 blocks in a message; Slack
accepts about one message per second per webhook (the channel's min_interval, 1s by default).

What a feed supplies (post text, author, URL) never becomes Slack syntax: &, < and > are entities, so no
`<!channel>` or link can be smuggled in; every mrkdwn object is `verbatim`, so Slack does not turn `@here` or
a bare URL into a mention or link; and mrkdwn has no escape character, so each formatting character of a post
(* _ ~ `) is sent as a date Slack cannot format, which Slack shows as its plain fallback, the character itself
(the technique jsx-slack's <Escape> uses). A `>` opening a line follows a soft hyphen, so it is no quote.
Cuts fall between such units, never inside an entity or a link.
"""

from __future__ import annotations

import re
from typing import Any

import requests

from bot.alerts import (
    exchange_follow_up,
    exchange_title,
    highlight,
    icon,
    link_target,
    notice_title,
    one_line,
    platform_name,
    posted_at,
    watch_icon,
    watch_title,
    watch_window,
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
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_FORMATTING = frozenset("*_~`")
_QUOTES = frozenset(">＞")  # either opens a quote at the start of a line
_UNIT = re.compile(r"<[^<>]*>|&(?:amp|lt|gt);|.", re.DOTALL)  # what a cut must not split


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
        title = ("⚠️ " if payload["state"] == "failing" else "✅ ") + notice_title(payload)
        return {
            "text": _cut(escape(payload["text"]), SECTION_LIMIT),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title}},
                {"type": "section", "text": _mrkdwn(_cut(literal(payload["text"]), SECTION_LIMIT))},
            ],
        }
    if payload.get("kind") == "exchange":
        return exchange_message(payload)
    if payload.get("kind") == "watch":
        return _watch_message(payload)
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
        blocks.append(context_block(f"…and {len(items) - shown} more (see `run_bot.py report latest-hits`)"))
    text = f"Ringside digest: {len(items)} alerts. " + " | ".join(_fallback(i["payload"]) for i in items)
    return {"text": _cut(text, SECTION_LIMIT), "blocks": blocks}


def exchange_message(payload: dict[str, Any], follow_up: bool = True, spare: int = 0) -> dict[str, Any]:
    """The whole exchange in one message, leaving `spare` of the 50 blocks free (for buttons). Incoming
    webhooks cannot edit or thread, so there (`follow_up`) a later turn is a follow-up that names the exchange
    and the turn it follows; the Slack app threads instead."""
    title = "🔥 " + exchange_title(payload)
    note = exchange_follow_up(payload) if follow_up else None
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _truncate(title, HEADER_LIMIT)}},
        context_block(f"thread `{escape(payload['thread'])}`" + (f" · {literal(note)}" if note else "")),
    ]
    posts = payload["exchange"]["posts"]
    # The latest turns, if a long exchange outgrows 50 blocks.
    shown = posts[-((BLOCK_LIMIT - 3 - spare) // 2) :]
    if len(shown) < len(posts):
        blocks.append(context_block(f"…{len(posts) - len(shown)} earlier turns"))
    for item in shown:
        blocks += turn_blocks(item)
    text = exchange_title(payload) + ": " + " / ".join(f"{i['name']}: {i['post']['text']}" for i in posts)
    return {"text": _cut(escape(text), SECTION_LIMIT), "blocks": blocks}


def turn_blocks(item: dict[str, Any]) -> list[dict[str, Any]]:
    """One turn of an exchange: who, where and when, then the post with its matched spans in bold."""
    post = item["post"]
    who = (
        f"*{item['turn']}. {literal(item['name'])}* · @{literal(post['author'])} on "
        f"{platform_name(post['platform'])} · {posted_at(post)}"
    )
    if link_target(post.get("url")):
        who += f" · {_link(post['url'], 'open')}"
    return [context_block(who), {"type": "section", "text": _mrkdwn(bold_spans(post["text"], item["spans"]))}]


def turn_fallback(item: dict[str, Any]) -> str:
    """The plain `text` of a message showing one turn (what notifications show)."""
    return _cut(escape(f"Turn {item['turn']}: {item['name']}: {item['post']['text']}"), SECTION_LIMIT)


def _watch_message(payload: dict[str, Any]) -> dict[str, Any]:
    """A frequency, spike or silence alert: the measurement, its window, then each post as a line."""
    title = f"{watch_icon(payload)} {watch_title(payload)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _truncate(title, HEADER_LIMIT)}},
        {"type": "section", "text": _mrkdwn(_cut(literal(payload["text"]), SECTION_LIMIT))},
        context_block(f"window: {watch_window(payload)}"),
    ]
    for post in payload["posts"][: BLOCK_LIMIT - len(blocks)]:
        line = (
            f"*@{literal(post['author'])}* on {platform_name(post['platform'])} · {posted_at(post)}: "
            f"{literal(one_line(post['text']))}"
        )
        if link_target(post.get("url")):
            line += f" · {_link(post['url'], 'open')}"
        blocks.append(context_block(line))
    return {
        "text": _cut(escape(f"{watch_title(payload)}: {payload['text']}"), SECTION_LIMIT),
        "blocks": blocks,
    }


def _header(payload: dict[str, Any]) -> dict[str, Any]:
    rule = payload["rule"]
    text = f"{icon(rule['category'])} {rule['category'].capitalize()} · severity {rule['severity']}/5"
    return {"type": "header", "text": {"type": "plain_text", "text": _truncate(text, HEADER_LIMIT)}}


def _alert_blocks(payload: dict[str, Any], folded: int, title: bool = False) -> list[dict[str, Any]]:
    post, rule = payload["post"], payload["rule"]
    when = posted_at(post)
    who = f"*@{literal(post['author'])}* on {platform_name(post['platform'])} · {when}"
    if post.get("kind") not in (None, "post"):
        who += f" · {post['kind']}"
    if title:
        who = f"{icon(rule['category'])} *{rule['category']}* {rule['severity']}/5 · " + who
    footer = f"rule `{literal(rule['id'])}`"
    why = why_line(payload)
    if why:
        footer += f" · {literal(why)}"
    if link_target(post.get("url")):
        footer += f" · {_link(post['url'], 'open the post')}"
    if folded:
        footer += f" · +{folded} more like this from @{literal(post['author'])}"
    section = {"type": "section", "text": _mrkdwn(bold_spans(post["text"], payload["spans"]))}
    return [context_block(who), section, context_block(footer)]


def context_block(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [_mrkdwn(_cut(text, SECTION_LIMIT))]}


def _mrkdwn(text: str) -> dict[str, Any]:
    """A mrkdwn text object; verbatim, so Slack adds no links or mentions of its own (`@here`, #channel)."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def bold_spans(text: str, spans: list[list[Any]]) -> str:
    """The post text as Slack mrkdwn showing exactly its characters (see `literal`), matched spans in bold,
    at most 3,000 characters."""
    marked = literal(highlight(text, spans, _OPEN, _CLOSE))
    return _cut(marked.replace(_OPEN, "*").replace(_CLOSE, "*"), SECTION_LIMIT, bold=True)


def _link(url: str, label: str) -> str:
    """A Slack link to an http(s) URL (see link_target): entities for &, and percent-escapes for the
    characters that would end the link or start its label."""
    target = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{target}|{label}>"


def _fallback(payload: dict[str, Any]) -> str:
    post, rule = payload["post"], payload["rule"]
    where = platform_name(post["platform"])
    text = f"{rule['category'].capitalize()} by @{post['author']} on {where}: {post['text']}"
    return _cut(escape(text), SECTION_LIMIT)


def escape(text: str) -> str:
    """Entities for &, < and >: enough for the plain `text` fallback, which Slack shows in notifications."""
    return "".join(_ENTITIES.get(char, char) for char in text)


def literal(text: str) -> str:
    """mrkdwn that shows `text` as it is: entities for &, < and >; each formatting character as a date Slack
    cannot format, whose fallback (the character) Slack shows as plain text; a soft hyphen before a `>` that
    opens a line. The bold markers _OPEN and _CLOSE pass through."""
    out: list[str] = []
    line_start = True
    for char in text:
        if char in _QUOTES and line_start:
            out.append("\u00ad")
        if char in _FORMATTING:
            out.append(f"<!date^00000000^{{_}}|{char}>")  # jsx-slack's exact form
        else:
            out.append(_ENTITIES.get(char, char))
        line_start = char == "\n" or (line_start and char in (_OPEN, _CLOSE))
    return "".join(out)


def _cut(mrkdwn: str, limit: int, bold: bool = False) -> str:
    """At most `limit` characters, cut between units (a character, an entity, a link or date) and ended
    with an ellipsis; with `bold`, a bold span left open by the cut is closed (every bare * is a marker)."""
    if len(mrkdwn) <= limit:
        return mrkdwn
    kept: list[str] = []
    size = 0
    for unit in _UNIT.findall(mrkdwn):
        if size + len(unit) > limit - 2:  # room for a closing * and the ellipsis
            break
        kept.append(unit)
        size += len(unit)
    if bold and kept.count("*") % 2:
        kept.append("*")
    return "".join(kept) + "…"


def _truncate(text: str, limit: int) -> str:
    """For plain_text (a header), where no entity or link can be split."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
