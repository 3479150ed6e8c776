"""A stand-in for Slack's Web API on 127.0.0.1, for slack_sdk's real WebClient (base_url=api.base_url).

It records every call (method and arguments, JSON or form) and answers as Slack does: chat.postMessage with
ok, the conversation's id and a new `ts`; chat.update with ok and the same `ts`; auth.test with the bot's
ids. A test scripts other answers for the next calls: 429 with Retry-After, an error such as invalid_auth.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl

from tests.receiver import LoopbackHTTP, Serving

CHANNEL_ID = "C0RINGSIDE"


@dataclass
class Call:
    method: str
    arguments: dict[str, Any]
    authorization: str


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()


def error(code: str, status: int = 200, **headers: str) -> Reply:
    """Slack's answer to a call it refused: {"ok": false, "error": code}."""
    return Reply(
        status, {"ok": False, "error": code}, tuple((k.replace("_", "-"), v) for k, v in headers.items())
    )


RATE_LIMITED = error("ratelimited", 429, Retry_After="30")


class SlackApi(LoopbackHTTP):
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.script: deque[tuple[str | None, Reply]] = deque()
        self.lock = threading.Lock()
        self._ts = itertools.count(1)
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length).decode()
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    arguments = json.loads(raw or "{}")
                else:
                    arguments = dict(parse_qsl(raw))
                method = self.path.rsplit("/", 1)[-1]
                reply = api.reply_to(Call(method, arguments, self.headers.get("Authorization", "")))
                body = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/api/"

    def answer(self, *replies: Reply, method: str | None = None) -> None:
        """Answer the next calls (of `method` only, when given) with these, in order."""
        with self.lock:
            self.script.extend((method, reply) for reply in replies)

    def reply_to(self, call: Call) -> Reply:
        with self.lock:
            self.calls.append(call)
            for index, (method, reply) in enumerate(self.script):
                if method in (None, call.method):
                    del self.script[index]
                    return reply
            return Reply(body=self.success(call))

    def success(self, call: Call) -> dict[str, Any]:
        if call.method == "chat.postMessage":
            return {"ok": True, "channel": CHANNEL_ID, "ts": f"1700000000.{next(self._ts):06d}"}
        if call.method == "chat.update":
            return {"ok": True, "channel": call.arguments["channel"], "ts": call.arguments["ts"]}
        if call.method == "auth.test":
            return {
                "ok": True,
                "user_id": "U0BOT",
                "bot_id": "B0BOT",
                "team_id": "T0TEAM",
                "user": "ringside",
            }
        return {"ok": True}

    def calls_to(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]


class SocketMode(Serving):
    """A stand-in for Slack's Socket Mode end on 127.0.0.1 (a websocket server): it says hello to each client,
    hands it the envelopes a test queues (`deliver`), and records the acknowledgements that come back."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.envelopes: deque[dict[str, Any]] = deque()
        self.acks: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.closing = threading.Event()
        super().__init__(serve(self._session, "127.0.0.1", 0))

    def __exit__(self, *exc: Any) -> None:
        self.closing.set()
        super().__exit__(*exc)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/link"

    def deliver(self, payload: dict[str, Any], envelope_id: str = "env-1") -> None:
        """Queue an interactive envelope carrying `payload` for the connected client."""
        self.envelopes.append(
            {
                "envelope_id": envelope_id,
                "type": "interactive",
                "accepts_response_payload": False,
                "payload": payload,
            }
        )

    def _session(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        connection.send(
            json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0"}})
        )
        self.connected.set()
        try:
            while not self.closing.is_set():
                if self.envelopes:
                    connection.send(json.dumps(self.envelopes.popleft()))
                with contextlib.suppress(TimeoutError):
                    self.acks.append(json.loads(connection.recv(timeout=0.05)))
        except ConnectionClosed:
            pass
