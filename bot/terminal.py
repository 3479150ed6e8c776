"""Text from posts (and from remote servers) made safe to print on an operator's terminal.

A post can carry control characters: `\\x1b]0;...\\x07` retitles the window, `\\x1b[2J` clears the screen,
`\\r` overwrites the line. Whatever we print to a terminal keeps newline and tab and loses every other
control character (C0, DEL and C1); JSON keeps them, escaped, so nothing is lost for programs.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# json.dumps(ensure_ascii=False) escapes C0 itself but writes DEL and C1 as they are.
_RAW_IN_JSON = re.compile(r"[\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` without control characters, newline and tab kept."""
    return _CONTROL.sub("", text)


def printable_with_spans(text: str, spans: Sequence[Sequence[Any]]) -> tuple[str, list[list[Any]]]:
    """`printable(text)` and the [start, end, ...] spans moved to point at the same characters in it."""
    removed = [match.start() for match in _CONTROL.finditer(text)]
    if not removed:
        return text, [list(span) for span in spans]

    def moved(offset: int) -> int:
        return offset - bisect_left(removed, offset)

    return printable(text), [[moved(start), moved(end), *rest] for start, end, *rest in spans]


def printable_payload(value: Any) -> Any:
    """An alert payload with every string printable; a post's text and the spans over it stay in step."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [printable_payload(item) for item in value]
    if not isinstance(value, dict):
        return value
    cleaned = {key: printable_payload(item) for key, item in value.items()}
    post = value.get("post")
    if isinstance(post, dict) and isinstance(post.get("text"), str) and isinstance(value.get("spans"), list):
        cleaned["post"]["text"], cleaned["spans"] = printable_with_spans(post["text"], value["spans"])
    return cleaned


def json_escaped(document: str) -> str:
    """JSON text with DEL and C1 characters written as \\u escapes: the same JSON value, safe to print."""
    return _RAW_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", document)
