"""Time in one place: UTC everywhere, ISO-8601 text in the database, durations such as 30s, 5m, 2h, 7d."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
# Ten years: anything longer is a typo, and a moment that far out can pass year 9999 (datetime cannot).
MAX_DURATION = 3650 * 86400.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`: a number of seconds, or text such as "30s", "5m", "2h", "7d", "1w".

    Raises ValueError for anything else: negative numbers, nan, infinity, and more than ten years.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 5m or 2h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration such as 30s, 5m or 2h, got {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a duration that is a number of seconds from 0 up, got {value!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"expected a duration of at most ten years (3650d), got {value!r}")
    return seconds


def parse_datetime(value: str) -> datetime:
    """An aware UTC datetime from ISO-8601 text; text without a zone is taken as UTC."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def iso(moment: datetime) -> str:
    """The database's form of a moment: UTC, milliseconds, ending in +00:00, so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")
