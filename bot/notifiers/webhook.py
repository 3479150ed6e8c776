"""Signed webhooks: a POST of JSON in a documented, versioned schema (config/webhook.schema.json).

Headers, as Stripe and GitHub sign theirs:
    X-Ringside-Idempotency-Key: the alert's key, the same on every retry and after restarts
    X-Ringside-Timestamp:       Unix seconds when this attempt was signed
    X-Ringside-Signature:       sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
A receiver recomputes the signature over the raw body, compares it in constant time, rejects timestamps more
than five minutes old, and drops a key it has already seen.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import requests

from bot.notifiers import http
from bot.redact import Redactor
from config import ChannelConfig
from storage.store import Alert

SCHEMA = "ringside.alert/1"


class WebhookNotifier:
    def __init__(
        self,
        name: str,
        url: str,
        secret: str,
        timeout: float = 10.0,
        min_interval: float = 0.0,
        session: requests.Session | None = None,
    ) -> None:
        self.name = name
        self._url = url
        self._secret = secret.encode("utf-8")
        self.timeout = timeout
        self.min_interval = min_interval
        self.session = session or http.session()
        self._redact = Redactor([url, secret])

    @classmethod
    def from_config(cls, config: ChannelConfig) -> WebhookNotifier:
        return cls(
            config.name,
            config.secrets["url"].reveal(),
            config.secrets["signing"].reveal(),
            config.options["timeout"],
            config.options["min_interval"],
        )

    def send(self, alert: Alert) -> None:
        body = http.json_body(webhook_document(alert))
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Ringside-Idempotency-Key": alert_key(alert),
            "X-Ringside-Timestamp": timestamp,
            "X-Ringside-Signature": sign(self._secret, timestamp, body),
        }
        http.check(http.post(self.session, self._url, body, headers, self.timeout), redact=self._redact)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def alert_key(alert: Alert) -> str:
    return alert.digest_key or alert.key


def webhook_document(alert: Alert) -> dict[str, Any]:
    """The JSON body: one alert, or a digest of several (see config/webhook.schema.json)."""
    payload = alert.payload
    if payload.get("kind") == "watchdog":
        fields = ("state", "source", "feed", "since", "last_error", "text")
        return {"schema": SCHEMA, "type": "watchdog", "id": payload["key"], **{k: payload[k] for k in fields}}
    if payload.get("kind") == "exchange":
        return {
            "schema": SCHEMA,
            "type": "exchange",
            "id": payload["key"],
            "thread": payload["thread"],
            "turn": payload["turn"],
            "follows": payload["follows"],
            "exchange": payload["exchange"],
        }
    if payload.get("kind") == "watch":
        fields = ("rule", "watch", "window", "people", "names", "platforms", "measured", "text", "posts")
        return {"schema": SCHEMA, "type": "watch", "id": payload["key"], **{k: payload[k] for k in fields}}
    if payload.get("kind") == "digest":
        return {
            "schema": SCHEMA,
            "type": "digest",
            "id": alert_key(alert),
            "alerts": [_alert_object(item["payload"], item.get("folded", 0)) for item in payload["alerts"]],
        }
    return {"schema": SCHEMA, "type": "alert", **_alert_object(payload, alert.folded)}


def decision(payload: dict[str, Any]) -> dict[str, Any]:
    """What decided the alert; payloads stored before the detector existed were decided by their rule."""
    return {
        "decided_by": payload.get("decided_by") or payload["rule"]["id"],
        "probability": payload.get("probability"),
        "why": payload.get("why") or [],
    }


def _alert_object(payload: dict[str, Any], folded: int) -> dict[str, Any]:
    return {
        "id": payload["key"],
        "rule": payload["rule"],
        "post": payload["post"],
        "spans": payload["spans"],
        "decision": decision(payload),
        "folded": folded,
    }
