"""Shared fixtures: real SQLite files in tmp, settings files written as a user would, replay feeds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.detect.detector import Detector
from bot.detect.matcher import Matcher, load_rules
from bot.detect.scorer import Scorer
from config import DEFAULT_RULES
from storage import Store

ROOT = Path(__file__).resolve().parent.parent
DEMO_FEED = ROOT / "config" / "replay" / "cage-match-2023.jsonl"


@pytest.fixture
def store(tmp_path: Path):
    opened = Store.open(tmp_path / "ringside.db")
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def matcher() -> Matcher:
    return Matcher(load_rules(DEFAULT_RULES))


@pytest.fixture(scope="session")
def detector(matcher: Matcher) -> Detector:
    """The rule pack alone: tests of plumbing (storing, delivery, exchanges) that must not move when the
    model is retrained."""
    return Detector(matcher)


@pytest.fixture(scope="session")
def scorer() -> Scorer:
    return Scorer.load()


@pytest.fixture(scope="session")
def shipped_detector(matcher: Matcher, scorer: Scorer) -> Detector:
    """What the service runs by default: the rule pack and the shipped model."""
    return Detector(matcher, scorer)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a settings file; {tmp} in the text becomes the test's tmp directory."""

    def write(text: str, name: str = "ringside.toml") -> Path:
        path = tmp_path / name
        path.write_text(text.replace("{tmp}", str(tmp_path)), encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_feed(tmp_path: Path) -> Callable[..., Path]:
    """Write a replay JSONL file from dicts (or raw strings, written as they are)."""

    def write(records: list[dict[str, Any] | str], name: str = "feed.jsonl") -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


def replay_config(feed: Path, database: Path, extra: str = "", model: str = "off") -> str:
    """Settings that replay `feed` into `database`. The model is off unless asked for, so tests of plumbing
    keep their counts when the model is retrained."""
    return f"""
[storage]
path = "{database}"

[matcher]
rules = "{DEFAULT_RULES}"

[detector]
model = "{model}"

[schedule]
deliver_every = "1s"
jitter = "0s"

[[sources]]
name = "demo"
type = "replay"
path = "{feed}"
every = "1s"

[[channels]]
name = "console"
type = "console"
color = false
{extra}
"""


def post_record(id: str, text: str, created_at: str = "2023-06-21T02:58:00Z", **extra: Any) -> dict[str, Any]:
    return {"platform": "x", "id": id, "author": "elonmusk", "text": text, "created_at": created_at, **extra}
