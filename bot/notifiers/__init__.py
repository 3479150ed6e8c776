"""Channels: one file each, behind `send(alert)`, found by type in build_notifier.

A channel either accepts an alert (returns) or raises DeliveryError saying whether to try again and when.
The deliver step marks an alert sent only after `send` returned, so a crash in between means it is sent
again (at least once), carrying the same idempotency key.
"""

from __future__ import annotations

from typing import Protocol

from config import ChannelConfig
from storage.store import Alert, Store

MESSAGE_LIMIT = 300  # characters of a delivery error kept (logged, and stored as the alert's last_error)


class DeliveryError(Exception):
    """The channel did not take the alert. `retry` False means never try again (dead). The message is cut
    to MESSAGE_LIMIT characters: it is stored with the alert and shown by `alerts status`."""

    def __init__(self, message: str, retry: bool = True, retry_after: float | None = None) -> None:
        if len(message) > MESSAGE_LIMIT:
            message = message[: MESSAGE_LIMIT - 1] + "…"
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after


class Notifier(Protocol):
    name: str
    min_interval: float  # seconds to leave between two messages (Slack: one a second per webhook)

    def send(self, alert: Alert) -> None:
        """Deliver `alert` or raise DeliveryError."""
        ...


def build_notifier(config: ChannelConfig, store: Store | None = None) -> Notifier:
    """The channel `config` describes; `store` is where a Slack app records its messages and threads."""
    from bot.notifiers import apprise, console, slack, webhook

    if config.type == "slack_app":
        from bot.notifiers.slack_app import SlackAppNotifier  # slack_sdk, only when such a channel is set

        if store is None:
            raise ValueError("a slack_app channel needs the store to record its messages")
        return SlackAppNotifier.from_config(config, store)

    builders = {
        "console": console.ConsoleNotifier.from_config,
        "slack": slack.SlackNotifier.from_config,
        "webhook": webhook.WebhookNotifier.from_config,
        "apprise": apprise.AppriseNotifier.from_config,
    }
    return builders[config.type](config)
