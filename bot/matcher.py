"""The matcher: rules are data (config/rules/*.toml), compiled once, applied to every post.

This is the core service's plain phrase matcher: a rule fires when one of its phrases occurs as whole words
in the folded text, unless one of its `unless` phrases occurs too. The rule-language issue replaces it with
boolean/NEAR queries over one multi-pattern automaton; keep this interface (load_rules, Matcher.match).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bot.models import Hit, Post, Span
from bot.normalize import Folded, fold, fold_phrase
from config import ConfigError

CATEGORIES = ("challenge", "rivalry", "taunt", "response")


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    severity: int
    phrases: tuple[str, ...]
    unless: tuple[str, ...] = ()


class Matcher:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self._compiled = [(rule, _pattern(rule.phrases), _pattern(rule.unless)) for rule in rules]

    def match(self, post: Post) -> list[Hit]:
        """Every rule that fires on `post`, with spans over the post's original text."""
        folded = fold(post.text)
        hits = []
        for rule, wanted, unwanted in self._compiled:
            if unwanted is not None and unwanted.search(folded.text):
                continue
            spans = _spans(wanted, folded)
            if spans:
                hits.append(Hit(post.key, rule.id, rule.category, rule.severity, spans))
        return hits


def _pattern(phrases: tuple[str, ...]) -> re.Pattern[str] | None:
    if not phrases:
        return None
    # Longest first so "cage fight night" wins over "cage fight"; whole words only; any run of spaces.
    alternatives = sorted((fold_phrase(p) for p in phrases), key=len, reverse=True)
    body = "|".join(r"\s+".join(map(re.escape, p.split())) for p in alternatives)
    return re.compile(rf"(?<![^\W_])(?:{body})(?![^\W_])")


def _spans(pattern: re.Pattern[str] | None, folded: Folded) -> tuple[Span, ...]:
    if pattern is None:
        return ()
    spans = []
    for found in pattern.finditer(folded.text):
        start, end = folded.span(found.start(), found.end())
        spans.append(Span(start, end, " ".join(found.group().split())))
    return tuple(spans)


def load_rules(directory: Path) -> list[Rule]:
    """All rules in `directory`/*.toml, validated. Raises ConfigError naming the file and the rule."""
    files = sorted(Path(directory).glob("*.toml"))
    if not files:
        raise ConfigError(f"{directory}: no rule files (*.toml) found")
    rules: list[Rule] = []
    seen: dict[str, Path] = {}
    for file in files:
        for rule in _rules_in(file):
            if rule.id in seen:
                raise ConfigError(f"{file}: rule {rule.id!r} is already defined in {seen[rule.id]}")
            seen[rule.id] = file
            rules.append(rule)
    return rules


def _rules_in(file: Path) -> list[Rule]:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file}: not valid TOML: {error}") from None
    rules = []
    for index, table in enumerate(data.get("rules", [])):
        where = f"{file}: rules[{index}]"
        if "id" in table:
            where += f" ({table['id']})"
        rules.append(_rule(table, where))
    return rules


def _rule(table: dict, where: str) -> Rule:
    unknown = set(table) - {"id", "category", "severity", "phrases", "unless"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {sorted(unknown)[0]!r}; expected id, category, severity, phrases, unless"
        )
    rule_id, category, severity = table.get("id"), table.get("category"), table.get("severity", 3)
    if not isinstance(rule_id, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", rule_id):
        raise ConfigError(
            f"{where}: id: expected lower-case letters, digits, '-', '_' or '.', got {rule_id!r}"
        )
    if not isinstance(category, str) or not category:
        raise ConfigError(f"{where}: category: expected a name such as {', '.join(CATEGORIES)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ConfigError(f"{where}: severity: expected a whole number from 1 to 5, got {severity!r}")
    phrases, unless = table.get("phrases"), table.get("unless", [])
    for key, value in (("phrases", phrases), ("unless", unless)):
        if not isinstance(value, list) or not all(isinstance(p, str) and fold_phrase(p) for p in value):
            raise ConfigError(f"{where}: {key}: expected a list of non-empty phrases")
    if not phrases:
        raise ConfigError(f"{where}: phrases: expected at least one phrase")
    return Rule(rule_id, category, severity, tuple(phrases), tuple(unless))
