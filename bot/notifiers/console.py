"""Console: alerts printed for a person to read, matched words highlighted."""

from __future__ import annotations

import sys
from typing import TextIO

from bot.alerts import (
    exchange_follow_up,
    exchange_title,
    highlight,
    icon,
    notice_title,
    one_line,
    platform_name,
    posted_at,
    watch_icon,
    watch_title,
    watch_window,
    why_line,
)
from bot.terminal import printable_payload
from config import ChannelConfig
from storage.store import Alert

BOLD_YELLOW, RESET, DIM = "\033[1;33m", "\033[0m", "\033[2m"


class ConsoleNotifier:
    def __init__(self, name: str = "console", stream: TextIO | None = None, color: bool = True) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stdout
        self.color = color and self.stream.isatty()

    @classmethod
    def from_config(cls, config: ChannelConfig) -> ConsoleNotifier:
        return cls(config.name, color=config.options.get("color", True))

    def send(self, alert: Alert) -> None:
        """Print the alert; control characters from posts or remote errors never reach the terminal."""
        payload = printable_payload(alert.payload)
        if payload.get("kind") == "watchdog":
            mark = "⚠️" if payload["state"] == "failing" else "✅"
            title = f"{mark} {notice_title(payload).upper()}"
            text = f"{title} · {payload['source']}:{payload['feed']}\n   {payload['text']}\n"
        elif payload.get("kind") == "exchange":
            text = render_exchange(payload, self.color)
        elif payload.get("kind") == "watch":
            text = render_watch(payload)
        elif payload.get("kind") == "digest":
            items = payload["alerts"]
            text = f"📰 DIGEST · {len(items)} alerts\n\n" + "\n".join(
                render(i["payload"], self.color, i.get("folded", 0)) for i in items
            )
        else:
            text = render(payload, self.color, alert.folded)
        self.stream.write(text + "\n")
        self.stream.flush()


def render(payload: dict, color: bool = False, folded: int = 0) -> str:
    """An alert as a few lines of text: what fired, who said it where and when, the text marked up."""
    rule, post = payload["rule"], payload["post"]
    before, after = (BOLD_YELLOW, RESET) if color else ("**", "**")
    when = posted_at(post)
    kind = f" · {post['kind']}" if post.get("kind") not in (None, "post") else ""
    lines = [
        f"{icon(rule['category'])} {rule['category'].upper()} · severity {rule['severity']}/5"
        f" · rule {rule['id']}",
        f"   @{post['author']} on {platform_name(post['platform'])} · {when}{kind}",
        "   " + highlight(post["text"], payload["spans"], before, after).replace("\n", "\n   "),
    ]
    why = why_line(payload)
    if why:
        lines.append(f"   {why}")
    if post.get("url"):
        lines.append(f"   {DIM}{post['url']}{RESET}" if color else f"   {post['url']}")
    if folded:
        lines.append(f"   +{folded} more like this from @{post['author']}")
    return "\n".join(lines) + "\n"


def render_exchange(payload: dict, color: bool = False) -> str:
    """The whole exchange, turn by turn, as the issue's model case reads."""
    before, after = (BOLD_YELLOW, RESET) if color else ("**", "**")
    lines = [f"🔥 {exchange_title(payload).upper()}", f"   thread {payload['thread']}"]
    if exchange_follow_up(payload):
        lines.append(f"   {exchange_follow_up(payload)}")
    for item in payload["exchange"]["posts"]:
        post = item["post"]
        when = posted_at(post)
        link = "" if item["link"] == "first" else f" · {item['link']}"
        lines.append(
            f"   {item['turn']}. {item['name']} (@{post['author']} on {platform_name(post['platform'])}"
            f" · {when}){link}"
        )
        lines.append(
            "      " + highlight(post["text"], item["spans"], before, after).replace("\n", "\n      ")
        )
    return "\n".join(lines) + "\n"


def render_watch(payload: dict) -> str:
    """A frequency, spike or silence alert: what was measured, over when, and the posts that made it."""
    lines = [
        f"{watch_icon(payload)} {watch_title(payload).upper()}",
        f"   {payload['text']}",
        f"   window: {watch_window(payload)}",
    ]
    for post in payload["posts"]:
        lines.append(
            f"   · @{post['author']} on {platform_name(post['platform'])} · {posted_at(post)}: "
            f"{one_line(post['text'])}"
        )
    return "\n".join(lines) + "\n"
