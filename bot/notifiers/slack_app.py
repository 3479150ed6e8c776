"""Slack app: alerts posted through the Web API (chat.postMessage, chat.update) with a bot token, an exchange
in one thread, and buttons on each alert (handled by bot/notifiers/slack_buttons.py over Socket Mode).

Threads: an exchange's first alert in the channel opens a thread (its message shows the whole exchange); each
later turn is a reply in it, and the parent is updated to show the exchange as it now stands.

Delivered once: Slack takes no idempotency key, so the message's `ts` is recorded in the database as soon as
Slack answers, before the courier marks the alert sent. A retry of an alert whose `ts` is recorded posts
nothing again. What is left is the moment between Slack taking the message and that write (a kill exactly
then posts it twice), the same window as the webhook channel's between its receiver's 200 and mark-sent.

Errors: 429 waits for its Retry-After like the webhook channels; slack_sdk's own retry handlers are off, so
the courier alone decides when to try again. A token or channel that cannot work (invalid_auth,
not_in_channel, channel_not_found, ...) is a refusal for good, which pauses the channel after a few.
"""

from __future__ import annotations

import logging
import math
import re
from http.client import HTTPException
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.notifiers import DeliveryError
from bot.notifiers.http import Reply, retry_after
from bot.notifiers.slack import (
    context_block,
    exchange_message,
    literal,
    slack_message,
    turn_blocks,
    turn_fallback,
)
from bot.redact import Redactor
from config import ChannelConfig
from storage.slack import AlertAction, SlackMessage
from storage.store import Alert, Store

log = logging.getLogger("ringside.slack_app")

# Answers that no retry can change: the token, the app's place in the channel, or the channel itself.
CHANNEL_REFUSALS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "restricted_action",
        "team_access_not_granted",
        "ekm_access_denied",
    }
)
# Slack's own trouble: worth another try later.
TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
# chat.update of a parent that is gone: its thread still gets the turn.
PARENT_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
BUTTONS = {
    "not_a_challenge": "Not a challenge",
    "mute_rule": "Mute this rule 24 h",
    "acknowledge": "Acknowledge",
}
ACTION_PREFIX = "ringside_"  # a button's action_id is this and the action: ringside_acknowledge
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")


class SlackAppNotifier:
    def __init__(
        self,
        name: str,
        store: Store,
        client: WebClient,
        channel: str,
        min_interval: float = 1.0,
        app_token: str | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.client = client
        self.channel = channel
        self.min_interval = min_interval
        self.app_token = app_token
        self.redact = Redactor([t for t in (client.token, app_token) if t])
        self.listener: Any = None  # the Socket Mode connection, while `listen` runs it

    @classmethod
    def from_config(cls, config: ChannelConfig, store: Store) -> SlackAppNotifier:
        client = web_client(
            config.secrets["bot"].reveal(), config.options["api_url"], config.options["timeout"]
        )
        return cls(
            config.name,
            store,
            client,
            config.options["channel"],
            config.options["min_interval"],
            config.secrets["app"].reveal(),
        )

    def send(self, alert: Alert) -> None:
        """Post the alert (once: see the module's note); an exchange's later turn goes in its thread."""
        if alert.payload.get("kind") == "exchange":
            self._send_turn(alert)
            return
        if self.store.slack_message(alert.id) is None:
            message = compose(alert, "alert", [])
            self._post(alert, message)

    def _send_turn(self, alert: Alert) -> None:
        thread = self.store.slack_thread(self.name, alert.payload["thread"])
        if thread is None:
            message = compose(alert, "parent", [], latest=alert.payload)
            self._post(alert, message, thread=(self.name, alert.payload["thread"]))
            return
        if thread.parent_alert_id == alert.id:  # posted as the parent before a crash: nothing more to do
            return
        if self.store.slack_message(alert.id) is None:
            self._post(alert, compose(alert, "reply", []), thread_ts=thread.ts)
        self.store.set_thread_latest(self.name, thread.exchange_id, alert.id)
        try:
            self.update_message(thread.parent_alert_id)
        except DeliveryError as error:
            if error.retry:  # a rate limit: the retry posts nothing again and updates the parent then
                raise
            # The turn is in its thread: a parent Slack will not update must not count it dead.
            log.warning(
                "%s: alert %s is in its thread; its parent was not updated: %s", self.name, alert.key, error
            )

    def _post(
        self,
        alert: Alert,
        message: dict[str, Any],
        thread_ts: str | None = None,
        thread: tuple[str, str] | None = None,
    ) -> None:
        response = self._call(
            "chat.postMessage",
            channel=self.channel,
            text=message["text"],
            blocks=message["blocks"],
            thread_ts=thread_ts,
            unfurl_links=False,
            unfurl_media=False,
        )
        # Recorded at once: from here on a retry knows the message is there (see the module's note).
        self.store.save_slack_message(
            SlackMessage(alert.id, str(response["channel"]), str(response["ts"]), thread_ts), thread
        )

    def update_message(self, alert_id: int) -> None:
        """Show the alert's message as it now stands (its exchange's latest turn, what its buttons did). A
        parent deleted in Slack is left alone; a rate limit or Slack's trouble raises DeliveryError."""
        alert, posted = self.store.alert_by_id(alert_id), self.store.slack_message(alert_id)
        if alert is None or posted is None:
            return
        message = self.current_message(alert)
        try:
            self._call(
                "chat.update",
                channel=posted.channel_id,
                ts=posted.ts,
                text=message["text"],
                blocks=message["blocks"],
            )
        except DeliveryError as error:
            if error.retry or not any(code in str(error) for code in PARENT_GONE):
                raise
            log.warning("%s: cannot update the message of alert %s: %s", self.name, alert.key, error)

    def current_message(self, alert: Alert) -> dict[str, Any]:
        """The alert's message with what is stored now: a parent shows its exchange's latest turn."""
        actions = self.store.alert_actions(alert.id)
        thread = self.store.thread_opened_by(alert.id)
        if thread is not None:
            latest = self.store.alert_by_id(thread.latest_alert_id)
            return compose(alert, "parent", actions, latest=latest.payload if latest else None)
        role = "reply" if alert.payload.get("kind") == "exchange" else "alert"
        return compose(alert, role, actions)

    def _call(self, method: str, **arguments: Any) -> Any:
        """One Web API call; its failure as a DeliveryError that says whether to retry and when."""
        try:
            return self.client.api_call(method, json={k: v for k, v in arguments.items() if v is not None})
        except SlackApiError as error:
            raise api_error(error, self.redact) from None
        except (OSError, HTTPException, ValueError) as error:  # refused, reset, timed out, cut off; not JSON
            raise DeliveryError(f"Slack {method}: {type(error).__name__}, no answer") from None

    def listen(self) -> None:
        """Take button presses over Socket Mode until `stop_listening` (in threads of their own)."""
        from bot.notifiers.slack_buttons import start_listening

        if self.app_token and self.listener is None:
            self.listener = start_listening(self, self.app_token)

    def stop_listening(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None


def web_client(token: str, api_url: str, timeout: float) -> WebClient:
    """A Web API client with no retries of its own: the courier retries, honouring Retry-After."""
    return WebClient(token=token, base_url=api_url, timeout=math.ceil(timeout), retry_handlers=[])


def api_error(error: SlackApiError, redact: Redactor) -> DeliveryError:
    """What Slack's answer means for the alert: wait (429 with its Retry-After, or Slack's trouble), or
    refused for good (a bad token, a channel the app is not in; or a message Slack will never take)."""
    response = error.response
    data = response.data if isinstance(response.data, dict) else {}
    code = redact(str(data.get("error") or f"HTTP {response.status_code}"))[:200]
    status = response.status_code
    if status == 429 or code in TRANSIENT or status >= 500:
        headers = {k.title(): v for k, v in (response.headers or {}).items()}
        wait = retry_after(Reply(status, headers, b"")) if status == 429 else None
        return DeliveryError(f"Slack {code} (HTTP {status})", retry=True, retry_after=wait)
    if code in CHANNEL_REFUSALS:
        return DeliveryError(
            f"Slack refused ({code}: check the bot token and that the app is in the channel)", retry=False
        )
    return DeliveryError(f"Slack refused ({code})", retry=False)


def compose(
    alert: Alert, role: str, actions: list[AlertAction], latest: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The message for an alert: as a plain `alert`, as the `parent` of its exchange's thread (showing the
    exchange as of `latest`, a later turn's payload), or as a `reply` in it showing its own turn; then the
    buttons not used yet and a line saying what was done."""
    payload = alert.payload
    if role == "parent":
        message = exchange_message(latest or payload, follow_up=False, spare=2)
    elif role == "reply":
        item = own_turn(payload)
        message = {"text": turn_fallback(item), "blocks": turn_blocks(item)}
    else:
        message = slack_message(alert)
    if payload.get("kind") in ("watchdog", "digest"):
        return message
    return {"text": message["text"], "blocks": message["blocks"] + controls(alert, actions)}


def own_turn(payload: dict[str, Any]) -> dict[str, Any]:
    """The turn an exchange alert is about (its payload shows the whole exchange)."""
    return next(i for i in payload["exchange"]["posts"] if i["turn"] == payload["turn"])


def offered(alert: Alert) -> list[str]:
    """The buttons an alert has: an exchange has no single rule to mute, a watch's alert no single post
    to label (its rule, the watch, can be muted)."""
    wanted = [a for a in BUTTONS if a != "mute_rule" or "rule" in alert.payload]
    return [a for a in wanted if a != "not_a_challenge" or alert.payload.get("kind") != "watch"]


def controls(alert: Alert, actions: list[AlertAction]) -> list[dict[str, Any]]:
    done = {a.action for a in actions}
    left = [a for a in offered(alert) if a not in done]
    blocks: list[dict[str, Any]] = []
    if left:
        blocks.append(
            {"type": "actions", "block_id": "ringside", "elements": [button(a, alert) for a in left]}
        )
    if actions:
        blocks.append(context_block(" · ".join(done_line(a, alert) for a in actions)))
    return blocks


def button(action: str, alert: Alert) -> dict[str, Any]:
    made: dict[str, Any] = {
        "type": "button",
        "action_id": ACTION_PREFIX + action,
        "text": {"type": "plain_text", "text": BUTTONS[action]},
        "value": alert.key,
    }
    if action == "acknowledge":
        made["style"] = "primary"
    return made


def done_line(action: AlertAction, alert: Alert) -> str:
    """ "Marked not a challenge by @alice" (a mention Slack shows by name)."""
    who = f"<@{action.user_id}>" if _USER_ID.fullmatch(action.user_id) else literal(action.user_name or "?")
    if action.action == "not_a_challenge":
        return f"✖️ Marked not a challenge by {who}"
    if action.action == "mute_rule":
        return f"🔇 Rule `{literal(alert.payload['rule']['id'])}` muted for 24 h by {who}"
    return f"✅ Acknowledged by {who}"
