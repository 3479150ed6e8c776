"""A real HTTP receiver on 127.0.0.1 whose answers a test scripts: 200, 500, 429 with Retry-After, a hang past
the client's timeout, or a dropped connection; and hostile ones: an error body echoing the request path, an
answer drip-fed a byte at a time, a body of gigabytes (generated while it is sent, never held), a header line
urllib3 cannot parse. It records every request, which ones it accepted, and how much body it got out."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    accepted: bool = False
    at: float = field(default_factory=time.monotonic)
    body_bytes_sent: int = 0  # of the answer's body, before the client took no more

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str = "ok"
    headers: tuple[tuple[str, str], ...] = ()
    hang: float = 0.0  # seconds to wait before answering
    drop: bool = False  # close the connection without answering
    processed: bool = False  # with drop: the receiver took the alert, but its reply was lost
    echo_path: bool = False  # the body says which path was not found, as many servers' 404 pages do
    drip: float = 0.0  # seconds between two bytes of the whole answer, status line included
    huge: int = 0  # a body of this many bytes instead of `body`, generated as it goes out
    raw_header: str = ""  # a header line sent as it is (one without a colon breaks urllib3's parser)
    unsized: bool = False  # no Content-Length: the body ends when the connection closes (HTTP/1.0 style)
    trickle: float = 0.0  # seconds between two bytes of the body alone, the head sent at once


OK = Answer()


def status(code: int, body: str = "", **headers: str) -> Answer:
    return Answer(code, body, tuple((k.replace("_", "-"), v) for k, v in headers.items()))


HANG = Answer(hang=3.0)
CHUNK = b"x" * 65536
DROP = Answer(drop=True)
LOST_REPLY = Answer(drop=True, processed=True)


class Serving:
    """`server` (http.server's, or websockets' sync one) served in a thread of its own for the length of a
    `with` block."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()


class LoopbackHTTP(Serving):
    """An HTTP server on 127.0.0.1, on a free port, each request in a thread of its own."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        super().__init__(server)

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self.server.server_close()


class Receiver(LoopbackHTTP):
    def __init__(
        self,
        default: Answer = OK,
        fail_rate: float = 0.0,
        seed: int = 1,
        delay: float = 0.0,
        lost_reply_share: float = 0.0,
    ) -> None:
        self.script: deque[Answer] = deque()
        self.default = default
        self.fail_rate = fail_rate
        self.delay = delay
        self.lost_reply_share = lost_reply_share  # of the random failures: taken, but the reply was lost
        self.random = random.Random(seed)
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle's algorithm on, the second waits for the
            # client's delayed ACK, about 40 ms a request, which benchmarks would measure instead of Ringside.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = Received(self.path, dict(self.headers.items()), self.rfile.read(length))
                answer = receiver.next_answer()
                with receiver.lock:
                    receiver.received.append(request)
                if receiver.delay:
                    time.sleep(receiver.delay)
                if answer.drop:
                    request.accepted = answer.processed
                    self.close_connection = True
                    return
                if answer.hang:
                    time.sleep(answer.hang)
                request.accepted = 200 <= answer.status < 300
                try:
                    self.reply(request, answer)
                except OSError:  # the client hung up: what it did not read is not our concern
                    self.close_connection = True

            def reply(self, request: Received, answer: Answer) -> None:
                text = answer.body + (f" {request.path}" if answer.echo_path else "")
                payload = text.encode()
                length = answer.huge or len(payload)
                head = [f"HTTP/1.1 {answer.status} {self.responses.get(answer.status, ('',))[0]}"]
                head += [f"{name}: {value}" for name, value in answer.headers]
                head += ["Connection: close"] if answer.unsized else [f"Content-Length: {length}"]
                head += [answer.raw_header] if answer.raw_header else []
                head += ["", ""]
                if answer.drip:
                    for byte in "\r\n".join(head).encode() + payload:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(answer.drip)
                    return
                self.wfile.write("\r\n".join(head).encode())
                if answer.trickle:
                    self.close_connection = True
                    for byte in payload:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        request.body_bytes_sent += 1
                        time.sleep(answer.trickle)
                    return
                if not answer.huge:
                    self.wfile.write(payload)
                    request.body_bytes_sent = len(payload)
                    return
                while request.body_bytes_sent < answer.huge:
                    piece = CHUNK[: answer.huge - request.body_bytes_sent]
                    self.wfile.write(piece)
                    request.body_bytes_sent += len(piece)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def answer(self, *answers: Answer) -> None:
        """Answer the next requests with these, in order; then with the default."""
        self.script.extend(answers)

    def next_answer(self) -> Answer:
        with self.lock:
            if self.script:
                return self.script.popleft()
            if self.fail_rate and self.random.random() < self.fail_rate:
                if self.random.random() < self.lost_reply_share:
                    return LOST_REPLY
                return status(500, "random failure")
            return self.default

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.accepted]
