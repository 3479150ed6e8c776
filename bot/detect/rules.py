"""Rules are data: config/rules/*.toml, loaded and validated at start-up like the rest of the settings.

    [[rules]]
    id = "cage-fight"                 # unique across all files
    category = "challenge"            # challenge, rivalry, taunt, response, veto, or your own
    severity = 4                      # 1-5
    query = '("cage match" OR octagon) NOT "nicolas cage"'
    description = "..."               # optional, shown in check-config and backtests
    languages = ["en", "fr"]          # optional scopes: only posts in these languages,
    platforms = ["x"]                 #   on these platforms,
    accounts = ["elonmusk"]           #   by these accounts ("name" or "platform:name"),
    kinds = ["post", "quote"]         #   of these kinds (post, reply, quote, repost)
    channels = ["slack-main"]         # optional: its alerts go only to these channels (bot.routing)

Every error names the file, the rule and, for a query, the column.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.detect.query import Node, QuerySyntaxError, parse
from bot.models import KINDS, MODEL_RULE, Post
from config import ConfigError

CATEGORIES = ("challenge", "rivalry", "taunt", "response", "veto")
# A veto rule suppresses every alert for the post it matches (rules' and the model's): a known false alarm.
VETO = "veto"
# Stored as hits, but never alerted on their own nor counted as flags: exchange detection links responses to
# the challenge they answer; a veto is kept so the decision can be read back.
SILENT_CATEGORIES = frozenset({"response", VETO})
_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_KEYS = (
    "id",
    "category",
    "severity",
    "query",
    "description",
    "languages",
    "platforms",
    "accounts",
    "kinds",
    "channels",
)


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    severity: int
    query: str
    node: Node
    description: str = ""
    languages: frozenset[str] = frozenset()
    platforms: frozenset[str] = frozenset()
    accounts: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    channels: tuple[str, ...] = ()  # the only channels its alerts go to; empty: wherever channels want them
    file: Path | None = field(default=None, compare=False)  # the rule file it came from, for messages

    @property
    def scoped(self) -> bool:
        """Whether some post can be outside this rule's scopes (else applies_to is always True)."""
        return bool(self.languages or self.platforms or self.kinds or self.accounts)

    def applies_to(self, post: Post) -> bool:
        """Whether the post is within this rule's scopes (a rule without scopes applies to every post)."""
        if self.languages and (post.lang or "").split("-")[0].lower() not in self.languages:
            return False
        if self.platforms and post.platform not in self.platforms:
            return False
        if self.kinds and post.kind not in self.kinds:
            return False
        if self.accounts:
            author = post.author.lower()
            return author in self.accounts or f"{post.platform}:{author}" in self.accounts
        return True


def load_rules(directory: Path | str) -> list[Rule]:
    """All rules in `directory`/*.toml, validated; ids are unique across files."""
    files = sorted(Path(directory).glob("*.toml"))
    if not files:
        raise ConfigError(f"{directory}: no rule files (*.toml) found")
    rules: list[Rule] = []
    seen: dict[str, Path] = {}
    for file in files:
        for rule in rules_in_file(file):
            if rule.id in seen:
                raise ConfigError(f"{file}: rule {rule.id}: id already used in {seen[rule.id]}")
            seen[rule.id] = file
            rules.append(rule)
    return rules


def rules_in_file(file: Path) -> list[Rule]:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{file}: cannot read the rule file: {error.strerror}") from None
    unknown = set(data) - {"rules"}
    if unknown:
        raise ConfigError(f"{file}: unknown key {sorted(unknown)[0]!r}; rules go in [[rules]] tables")
    tables = data.get("rules", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{file}: rules: expected [[rules]] tables")
    for index, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: rules[{index}]: expected a [[rules]] table, got {table!r}")
    return [
        replace(rule_from_table(table, f"{file}: rules[{index}]"), file=file)
        for index, table in enumerate(tables)
    ]


def rule_from_table(table: dict[str, Any], where: str) -> Rule:
    """One validated Rule; `where` prefixes every error message."""
    rule_id = table.get("id")
    if not isinstance(rule_id, str) or not _ID.fullmatch(rule_id):
        raise ConfigError(
            f"{where}: id: expected lower-case letters, digits, '-', '_' or '.', got {rule_id!r}"
        )
    where = f"{where.rsplit(': ', 1)[0]}: rule {rule_id}"
    if rule_id == MODEL_RULE:
        raise ConfigError(f"{where}: id: '{MODEL_RULE}' is reserved for hits decided by the learned model")
    unknown = set(table) - set(_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}; expected one of: {', '.join(_KEYS)}")
    category, severity, query = table.get("category"), table.get("severity", 3), table.get("query")
    if not isinstance(category, str) or not _ID.fullmatch(category):
        raise ConfigError(
            f"{where}: category: expected a name such as {', '.join(CATEGORIES)}, got {category!r}"
        )
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ConfigError(f"{where}: severity: expected a whole number from 1 to 5, got {severity!r}")
    if not isinstance(query, str):
        raise ConfigError(f"{where}: query: expected a query string such as '\"cage match\" OR octagon'")
    try:
        node = parse(query)
    except QuerySyntaxError as error:
        raise ConfigError(f"{where}: query {error}") from None
    return Rule(
        id=rule_id,
        category=category,
        severity=severity,
        query=query,
        node=node,
        description=str(table.get("description", "")),
        languages=_names(table, "languages", where),
        platforms=_names(table, "platforms", where),
        accounts=_names(table, "accounts", where),
        kinds=_kinds(table, where),
        channels=_channels(table, where),
    )


def _names(table: dict[str, Any], key: str, where: str) -> frozenset[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f'{where}: {key}: expected a list of names such as ["en", "fr"]')
    return frozenset(v.strip().lower().replace("@", "") for v in value)


def _channels(table: dict[str, Any], where: str) -> tuple[str, ...]:
    """The channel names a rule sends to; whether such channels exist is checked with the settings
    (bot.routing), which the rule pack does not know."""
    if "channels" not in table:
        return ()
    value = table["channels"]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(
            f'{where}: channels: expected a list of channel names such as ["slack-main"], got {value!r}'
        )
    return tuple(dict.fromkeys(v.strip() for v in value))


def _kinds(table: dict[str, Any], where: str) -> frozenset[str]:
    kinds = _names(table, "kinds", where)
    wrong = kinds - set(KINDS)
    if wrong:
        raise ConfigError(f"{where}: kinds: {sorted(wrong)[0]!r} is not one of {', '.join(KINDS)}")
    return kinds
