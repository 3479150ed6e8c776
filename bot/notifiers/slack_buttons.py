"""The Slack app's buttons: a Bolt app whose handlers write what a press means to the database and update the
message; Socket Mode carries the presses, so Ringside needs no public URL.

- "Not a challenge" stores the operator's verdict `none` on the alert's post (the labels `run_bot.py train`
  reads, as `run_bot.py label` does; source "slack"). For an exchange, the post is the one its message shows:
  the challenge that opened the thread for the parent, the turn's own post for a reply.
- "Mute this rule 24 h" mutes the alert's rule (as `run_bot.py mute --rule`); an exchange has no rule to mute.
- "Acknowledge" records who took it and when (table alert_actions).

Each handler acknowledges the press at once (Slack wants that within 3 seconds), writes, and then replaces the
pressed button with a line saying who did what. Presses are anyone's in the channel: who may see the alerts
may judge them. A press on a message this database does not know (another Ringside's) is logged and ignored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from slack_bolt import App

from bot.notifiers import DeliveryError
from bot.notifiers.slack_app import ACTION_PREFIX, SlackAppNotifier, own_turn
from bot.timeutil import utcnow
from storage.labels import LabelError
from storage.store import Alert

log = logging.getLogger("ringside.slack_app")
MUTE_FOR = timedelta(hours=24)
RECONNECT_EVERY = 60.0  # seconds between two tries to open Socket Mode after it failed


class ButtonHandlers:
    """Bolt listeners for one Slack app channel; Bolt passes `ack`, `body` and `action` by name."""

    def __init__(self, notifier: SlackAppNotifier) -> None:
        self.notifier = notifier
        self.store = notifier.store

    def not_a_challenge(self, ack: Callable[[], Any], body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        alert = self._alert(body, action)
        if alert is None:
            return
        try:
            post_key, version = labelled_post(self.notifier, alert)
            self.store.save_label(post_key, "none", "none", source="slack", version=version)
        except LabelError as error:  # the post was pruned meanwhile: nothing to label
            log.warning("%s: cannot label alert %s: %s", self.notifier.name, alert.key, error)
            return
        self._done(alert, "not_a_challenge", body)

    def mute_rule(self, ack: Callable[[], Any], body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        alert = self._alert(body, action)
        if alert is not None and "rule" in alert.payload:
            self.store.mute(utcnow() + MUTE_FOR, rule_id=alert.payload["rule"]["id"])
            self._done(alert, "mute_rule", body)

    def acknowledge(self, ack: Callable[[], Any], body: dict[str, Any], action: dict[str, Any]) -> None:
        ack()
        alert = self._alert(body, action)
        if alert is not None:
            self._done(alert, "acknowledge", body)

    def _alert(self, body: dict[str, Any], action: dict[str, Any]) -> Alert | None:
        """The alert whose message the button is on. Found by where the message is, not by the button's
        key alone: one key is in every channel, and two channels of one Slack app share its presses."""
        container = body.get("container") or {}
        channel_id = container.get("channel_id") or (body.get("channel") or {}).get("id")
        ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
        alert = self.store.alert_at(str(channel_id), str(ts))
        if alert is None or alert.key != action.get("value"):
            log.warning(
                "%s: a button for alert %r on message %s, which this database does not have",
                self.notifier.name,
                action.get("value"),
                ts,
            )
            return None
        return alert

    def _done(self, alert: Alert, action: str, body: dict[str, Any]) -> None:
        """Record who did it (after the write it stands for: a crash between leaves the button to press
        again, never a button gone with nothing done), then show it on the message."""
        user = body.get("user") or {}
        self.store.record_action(
            alert.id, action, str(user.get("id", "")), user.get("username") or user.get("name")
        )
        try:
            self.notifier.update_message(alert.id)
        except DeliveryError as error:  # what was pressed is stored; the message shows it at its next update
            log.warning("%s: cannot update the message of alert %s: %s", self.notifier.name, alert.key, error)


def labelled_post(notifier: SlackAppNotifier, alert: Alert) -> tuple[str, int | None]:
    """The post a "Not a challenge" on this alert is about, and the version of its text the alert showed
    (None: the current text)."""
    payload = alert.payload
    if payload.get("kind") == "exchange":
        opened = notifier.store.thread_opened_by(alert.id) is not None
        item = payload["exchange"]["posts"][0] if opened else own_turn(payload)
        return item["post"]["key"], None
    return notifier.store.post_of_alert(alert.id)


def button_app(notifier: SlackAppNotifier, verify_token: bool = True, synchronous: bool = False) -> App:
    """The Bolt app taking the channel's button presses; `verify_token` checks the bot token (auth.test)
    when it is made. Bolt answers Slack as soon as a handler acks and lets it finish in a thread of its own;
    `synchronous` makes `dispatch` return only once the handler finished (tests)."""
    app = App(
        client=notifier.client, token_verification_enabled=verify_token, process_before_response=synchronous
    )
    handlers = ButtonHandlers(notifier)
    app.action(ACTION_PREFIX + "not_a_challenge")(handlers.not_a_challenge)
    app.action(ACTION_PREFIX + "mute_rule")(handlers.mute_rule)
    app.action(ACTION_PREFIX + "acknowledge")(handlers.acknowledge)
    return app


class Listener:
    """Socket Mode for one channel, opened in a thread of its own (a Slack that cannot be reached holds up
    nothing else) and tried again every RECONNECT_EVERY seconds until it opens or `close` is called."""

    def __init__(self, notifier: SlackAppNotifier, app_token: str) -> None:
        self.notifier = notifier
        self.app_token = app_token
        self.handler: Any = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._open, name=f"slack-{notifier.name}", daemon=True)

    def start(self) -> Listener:
        self.thread.start()
        return self

    def _open(self) -> None:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        while not self.stopped.is_set():
            try:
                handler = SocketModeHandler(button_app(self.notifier), self.app_token)
                handler.connect()
            except Exception as error:  # a bad token, Slack unreachable: buttons wait, alerts still go out
                log.error(
                    "%s: cannot open Socket Mode for the buttons (%s: %s); trying again in %.0f s",
                    self.notifier.name,
                    type(error).__name__,
                    self.notifier.redact(str(error))[:200],
                    RECONNECT_EVERY,
                )
                self.stopped.wait(RECONNECT_EVERY)
                continue
            self.handler = handler
            if self.stopped.is_set():  # closed while it was connecting
                handler.close()
                return
            log.info("%s: taking button presses over Socket Mode", self.notifier.name)
            return

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        if self.handler is not None:
            self.handler.close()
            self.handler = None


def start_listening(notifier: SlackAppNotifier, app_token: str) -> Listener:
    return Listener(notifier, app_token).start()
