"""Apprise: any Apprise URL (Discord, Teams, Telegram, email, ntfy, ...). Needs the optional extra:
pip install 'ringside[apprise]'. Apprise does its own per-service retries and rate limits; it reports only
success or failure, so every failure is retried on Ringside's schedule.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from bot.alerts import (
    exchange_follow_up,
    exchange_title,
    highlight,
    link_target,
    notice_title,
    one_line,
    platform_name,
    posted_at,
    watch_title,
    watch_window,
    why_line,
)
from bot.notifiers import DeliveryError
from config import ChannelConfig, ConfigError
from storage.store import Alert

# Apprise logs the URLs it loads at DEBUG; a URL holds the service's token.
logging.getLogger("apprise").setLevel(logging.WARNING)

# A post quoted in an alert must not ping anyone: "@everyone"/"@here" (Discord), "@room" (Matrix), "@all"
# and "@channel" (Mattermost, Rocket.Chat), "@**all**" (Zulip), and a bare "@<id>", which Apprise's Discord
# plugin turns into a user ping. Apprise cannot pass Discord's allowed_mentions, so every @ that starts a
# word, and every <@, <@&, <! and <# (Discord's and Slack's mention syntax), gets a zero-width space after
# it, as discord.py's escape_mentions does: the text reads the same and matches no mention. An @ inside a
# word or a link (name@example.com, threads.net/@zuck) is no mention and is left whole.
_MENTION = re.compile(r"(?<![\w/.])@(?=[\w*&])|<(?=[@!#])")
# Markdown a post could use to disguise a link or restyle the alert; each is shown as itself, escaped.
_MARKDOWN = re.compile(r"([\\`*_~\[\]()<>#|])")
ZERO_WIDTH_SPACE = "\u200b"


class AppriseNotifier:
    def __init__(self, name: str, url: str, min_interval: float = 0.0) -> None:
        try:
            import apprise
        except ImportError:
            raise ConfigError(
                f"channels.{name}: type apprise needs the optional extra: pip install 'ringside[apprise]'"
            ) from None
        self.name = name
        self.min_interval = min_interval
        self._apprise = apprise.Apprise()
        if not self._apprise.add(url):
            raise ConfigError(f"channels.{name}: the Apprise URL in the environment is not one Apprise knows")

    @classmethod
    def from_config(cls, config: ChannelConfig) -> AppriseNotifier:
        return cls(config.name, config.secrets["url"].reveal(), config.options["min_interval"])

    def send(self, alert: Alert) -> None:
        title, body = apprise_message(alert)
        if not self._apprise.notify(title=title, body=body):
            raise DeliveryError("Apprise could not deliver (its own log line above says why)")


def defuse_mentions(text: str) -> str:
    """`text` with every mention token broken by a zero-width space (see _MENTION)."""
    return _MENTION.sub(lambda match: match.group() + ZERO_WIDTH_SPACE, text)


def quoted(text: str) -> str:
    """Words from a post or a remote server, as Markdown that shows them as they are and pings nobody."""
    return _MARKDOWN.sub(r"\\\1", defuse_mentions(text))


def apprise_message(alert: Alert) -> tuple[str, str]:
    payload = alert.payload
    if payload.get("kind") == "watchdog":
        return notice_title(payload), quoted(payload["text"])
    if payload.get("kind") == "exchange":
        lines = [exchange_follow_up(payload)] if exchange_follow_up(payload) else []
        for item in payload["exchange"]["posts"]:
            post = item["post"]
            lines.append(
                f"{item['turn']}. **{quoted(item['name'])}** ({quoted('@' + post['author'])} on "
                f"{platform_name(post['platform'])}, {posted_at(post)}): "
                + highlight(post["text"], item["spans"], "**", "**", escape=quoted)
            )
        return exchange_title(payload), "\n\n".join(lines)
    if payload.get("kind") == "watch":
        lines = [quoted(payload["text"]), f"window: {watch_window(payload)}"]
        lines += [
            f"{quoted('@' + post['author'])} on {platform_name(post['platform'])}, {posted_at(post)}: "
            + quoted(one_line(post["text"]))
            for post in payload["posts"]
        ]
        return watch_title(payload), "\n\n".join(lines)
    if payload.get("kind") == "digest":
        items = payload["alerts"]
        return f"Ringside digest: {len(items)} alerts", "\n\n".join(
            _markdown(i["payload"], i.get("folded", 0)) for i in items
        )
    rule = payload["rule"]
    return f"{rule['category'].capitalize()} · severity {rule['severity']}/5", _markdown(
        payload, alert.folded
    )


def _markdown(payload: dict[str, Any], folded: int) -> str:
    post, rule = payload["post"], payload["rule"]
    when = posted_at(post)
    lines = [
        f"**{quoted('@' + post['author'])}** on {platform_name(post['platform'])} · {when}",
        highlight(post["text"], payload["spans"], "**", "**", escape=quoted),
        *([why] if (why := why_line(payload)) else []),
        f"rule `{rule['id']}`"
        + (f" · {post['url']}" if link_target(post.get("url")) else "")
        + (f" · +{folded} more like this" if folded else ""),
    ]
    return "\n".join(lines)
