"""Logging for the service and the commands: readable lines or JSON (LOG_FORMAT=json) on stderr, and every
configured secret scrubbed from every record, whatever library wrote it."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from config import Settings


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json), for log collectors."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        document = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        return json.dumps(document, ensure_ascii=False)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
        )
    logging.basicConfig(level=level, handlers=[handler])
    # APScheduler logs every job start and finish at INFO: too much for a service that runs for months.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    # urllib3 logs request paths at DEBUG, and a Slack webhook's path is its secret.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class RedactSecrets(logging.Filter):
    """Replaces every spelling of every configured secret (see bot.redact) with ****, in the message and
    in any traceback or stack of a log record, whatever logged it, and drops the message's control
    characters."""

    def __init__(self, secrets: list[str]) -> None:
        from bot.redact import Redactor

        super().__init__()
        self.redact = Redactor(secrets)
        self.tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        # printable: a log line may quote a feed or a receiver, whose control characters would drive the
        # operator's terminal; newlines and tabs stay.
        from bot.terminal import printable

        record.msg, record.args = printable(self.redact(record.getMessage())), None
        if record.exc_info:
            # Formatted here, once, so the handler prints the redacted text (Formatter uses exc_text).
            record.exc_text = self.tracebacks.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def redact_logs(settings: Settings) -> None:
    """Install RedactSecrets on the root handlers, for the secrets these settings hold."""
    values = [s.reveal() for s in settings.secrets()]
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets(values))
