"""Rule previews over the stored history: `rules try QUERY` (which stored posts a query would hit) and
`rules diff [DIR]` (what the rules in DIR would change), both through the real matcher, never SQL.

Both only read the database (Store.open(readonly=True)), so they run beside the running service; posts come
from the store a batch at a time, and nothing is printed for a post until it is matched.

What `rules diff` compares, per rule id, over the stored posts (every stored version of each post, as the
service keeps one hit per rule and post, at the first version that rule matched):
- by default, the rules in DIR against the hits stored in the database: what the rules the service was
  running actually hit, whichever rules it had loaded then. The rules in DIR are judged as the service judges
  (a veto rule keeps a post's alerting rule hits out), so DIR equal to the running rules diffs to nothing.
- with `--against OLD_DIR`, the rules in DIR against the rules in OLD_DIR, both run over the same posts.
The learned model's hits are left out: this is about rules.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from bot.alerts import highlight, platform_name
from bot.commands import UsageError, parse_moment
from bot.detect.detector import Detector
from bot.detect.matcher import Matcher, load_rules
from bot.detect.query import QuerySyntaxError, parse
from bot.detect.rules import Rule
from bot.models import Hit, Post, parse_account, span_rows
from bot.terminal import json_escaped, printable, printable_with_spans
from bot.timeutil import iso
from config import Settings, load_settings
from storage import Store
from storage.history import StoredText

BATCH = 1000  # posts per read from the database
QUERY_RULE = "query"  # the id of the one rule `rules try` compiles its query into
BOLD, RESET = "\033[1m", "\033[0m"
PLAIN_MARKS = ("[[", "]]")  # around matched words when the output is no terminal

Spans = Sequence[Sequence[Any]]


# -- rules try -----------------------------------------------------------------------------------------


def command_rules_try(args: argparse.Namespace) -> int:
    """Print the stored posts QUERY hits (their current text), newest first unless --oldest-first, with the
    matched words marked, at most --limit of them, then how many hit in all."""
    rule = query_rule(args.query)
    since = parse_moment("--since", args.since)
    accounts = checked_accounts(args.account)
    settings = load_settings(args.config)
    matcher = matcher_of([rule], settings)
    tally = Tally()
    with Store.open(settings.database, create=False, readonly=True) as store:
        found = hits_in_history(store, matcher, since, accounts, not args.oldest_first, tally)
        shown = show_first(found, args.limit, None if args.json else marks(sys.stdout))
    order = "oldest first" if args.oldest_first else "newest first"
    if args.json:
        document = try_json(args.query, order, since, accounts, tally, shown)
        print(json_escaped(json.dumps(document, ensure_ascii=False, indent=1)))
        return 0
    more = tally.matched - len(shown)
    print(
        f"{tally.matched:,} post(s) hit, of {tally.read:,} stored post(s) read"
        f"{filters_said(since, accounts)}, {order}"
        + (f"; {more:,} more not shown (--limit {args.limit})" if more else "")
    )
    return 0


def show_first(
    found: Iterator[tuple[Post, Hit]], limit: int, marked: tuple[str, str] | None
) -> list[tuple[Post, Hit]]:
    """The first `limit` posts found, each printed as it comes when `marked` gives the marks; the rest are
    read through too, so the tally counts every post hit."""
    shown: list[tuple[Post, Hit]] = []
    for post, hit in found:
        if len(shown) == limit:
            continue
        shown.append((post, hit))
        if marked is not None:
            print(render_post(post, span_rows(hit.spans), *marked) + "\n")
    return shown


def try_json(
    query: str,
    order: str,
    since: datetime | None,
    accounts: list[str],
    tally: Tally,
    shown: list[tuple[Post, Hit]],
) -> dict[str, Any]:
    return {
        "query": query,
        "order": order,
        "since": iso(since) if since else None,
        "accounts": accounts,
        "read": tally.read,
        "matched": tally.matched,
        "shown": len(shown),
        "more": tally.matched - len(shown),
        "posts": [post_json(post, span_rows(hit.spans)) for post, hit in shown],
    }


def query_rule(query: str) -> Rule:
    """QUERY compiled as one rule without scopes; UsageError naming the column and showing the text there."""
    try:
        node = parse(query)
    except QuerySyntaxError as error:
        at = query[error.column - 1 :][:24]
        where = f"; the query from there: {printable(at)!r}" if at.strip() else ""
        raise UsageError(f"rules try: query {error}{where}") from None
    return Rule(id=QUERY_RULE, category="challenge", severity=3, query=query, node=node)


@dataclass
class Tally:
    read: int = 0  # stored texts read
    matched: int = 0  # posts hit


def hits_in_history(
    store: Store,
    matcher: Matcher,
    since: datetime | None,
    accounts: Sequence[str],
    newest_first: bool,
    tally: Tally,
) -> Iterator[tuple[Post, Hit]]:
    """Each stored post (its current text) that `matcher` hits, in the order asked, with the hit; `tally`
    counts the posts read and hit as the scan goes."""
    for batch in store.post_batches(since, accounts, newest_first, BATCH):
        tally.read += len(batch)
        for stored in batch:
            for hit in matcher.match(stored.post):
                tally.matched += 1
                yield stored.post, hit


# -- rules diff ----------------------------------------------------------------------------------------


@dataclass
class RuleChange:
    """One rule id's hits before (stored, or the --against rules) and now (the rules in DIR)."""

    rule_id: str
    # A rule of the baseline: True or False with --against; against stored hits, True when a hit anywhere
    # in the database has its id, else None (a new rule, or a running one that never hit: unknowable).
    before_rule: bool | None
    now_rule: bool  # a rule in DIR
    gained: int = 0
    lost: int = 0
    unchanged: int = 0
    gained_examples: list[tuple[Post, Spans]] = field(default_factory=list)
    lost_examples: list[tuple[Post, Spans]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.before_rule is False or (self.before_rule is None and self.gained):
            return "added"
        if not self.now_rule:
            return "removed"
        return "changed" if self.gained or self.lost else "same"


# rule id -> the text (a version of the post) the rule hit and its spans there
Verdicts = dict[str, tuple[Post, Spans]]


@dataclass
class Diff:
    changes: dict[str, RuleChange]
    examples: int
    read: int = 0  # posts read (each counted once, whatever its versions)

    def add(self, post_key: str, before: Verdicts, now: Verdicts) -> None:
        """Count one post: each rule id that hits it on one side only, or on both."""
        for rule_id in sorted(set(before) | set(now)):
            change = self.changes.setdefault(rule_id, RuleChange(rule_id, rule_id in before, True))
            if rule_id in before and rule_id in now:
                change.unchanged += 1
            elif rule_id in now:
                change.gained += 1
                if len(change.gained_examples) < self.examples:
                    change.gained_examples.append(now[rule_id])
            else:
                change.lost += 1
                if len(change.lost_examples) < self.examples:
                    change.lost_examples.append(before[rule_id])


def command_rules_diff(args: argparse.Namespace) -> int:
    """Print, per rule, the hits the rules in DIR gain and lose over the stored history against the stored
    hits (or against the rules in --against), with a few example posts of each."""
    since = parse_moment("--since", args.since)
    accounts = checked_accounts(args.account)
    settings = load_settings(args.config)
    directory = args.directory or settings.rules
    now_rules = load_rules(directory)
    now = Detector(matcher_of(now_rules, settings))
    before = Detector(matcher_of(load_rules(args.against), settings)) if args.against else None
    with Store.open(settings.database, create=False, readonly=True) as store:
        before_ids = {rule.id for rule in before.matcher.rules} if before else store.hit_rule_ids()
        changes = rule_changes(before_ids, {rule.id for rule in now_rules}, baseline_is_rules=bool(before))
        diff = Diff(changes, args.examples)
        for batch in store.post_batches(since, accounts, True, BATCH, every_version=True):
            now_hits = verdicts_of(now, batch)
            before_hits = verdicts_of(before, batch) if before else stored_verdicts(store, batch)
            for key in dict.fromkeys(stored.post.key for stored in batch):
                diff.read += 1
                diff.add(key, before_hits.get(key, {}), now_hits.get(key, {}))
    against = f"the rules in {args.against}" if args.against else f"the hits stored in {settings.database}"
    if args.json:
        print(json_escaped(json.dumps(diff_json(diff, directory, against), ensure_ascii=False, indent=1)))
    else:
        print_diff(diff, f"the rules in {directory} against {against}", filters_said(since, accounts))
    return 0


def rule_changes(before_ids: set[str], now_ids: set[str], baseline_is_rules: bool) -> dict[str, RuleChange]:
    """An empty RuleChange for every rule id of either side, in id order."""
    unknown = False if baseline_is_rules else None  # a DIR rule without stored hits: see RuleChange
    return {
        rule_id: RuleChange(rule_id, True if rule_id in before_ids else unknown, rule_id in now_ids)
        for rule_id in sorted(before_ids | now_ids)
    }


def verdicts_of(detector: Detector, batch: list[StoredText]) -> dict[str, Verdicts]:
    """Post key -> rule id -> the first text of the post (current, then earlier versions) that the rule hits
    as the service would store it (veto and silent categories decided by the real detector)."""
    found: dict[str, Verdicts] = {}
    judgements = detector.judge([stored.post for stored in batch])
    for stored, judgement in zip(batch, judgements, strict=True):
        verdicts = found.setdefault(stored.post.key, {})
        for hit in judgement.hits:
            verdicts.setdefault(hit.rule_id, (stored.post, span_rows(hit.spans)))
    return found


def stored_verdicts(store: Store, batch: list[StoredText]) -> dict[str, Verdicts]:
    """Post key -> rule id -> the text of the version its stored hit was made on, and the stored spans."""
    texts = {(stored.post.key, stored.version): stored.post for stored in batch}
    keys = list(dict.fromkeys(stored.post.key for stored in batch))
    found: dict[str, Verdicts] = {}
    for key, hits in store.stored_rule_hits(keys).items():
        for hit in hits:
            text = texts.get((key, hit.version))
            # A version no longer stored (never expected): show the current text, unmarked.
            shown = (text, hit.spans) if text is not None else (texts[(key, _current(batch, key))], ())
            found.setdefault(key, {}).setdefault(hit.rule_id, shown)
    return found


def _current(batch: list[StoredText], key: str) -> int:
    return next(stored.version for stored in batch if stored.post.key == key and stored.current)


def print_diff(diff: Diff, compared: str, filters: str) -> None:
    """The table of rules, the totals, then the example posts gained and lost per rule."""
    changes = list(diff.changes.values())
    width = max([len("rule"), *(len(change.rule_id) for change in changes)])
    print(f"rules diff: {compared}; {diff.read:,} stored post(s) read{filters}")
    print(f"{'rule':<{width}}  {'status':<8} {'before':>7} {'now':>7} {'gained':>7} {'lost':>7} {'same':>7}")
    for c in changes:
        print(
            f"{c.rule_id:<{width}}  {c.status:<8} {c.lost + c.unchanged:>7} {c.gained + c.unchanged:>7} "
            f"{c.gained:>7} {c.lost:>7} {c.unchanged:>7}"
        )
    statuses = [c.status for c in changes]
    print(
        f"total: {sum(c.gained for c in changes):,} hit(s) gained, {sum(c.lost for c in changes):,} lost, "
        f"{sum(c.unchanged for c in changes):,} unchanged; rules: {statuses.count('added')} added, "
        f"{statuses.count('removed')} removed, {statuses.count('changed')} changed, "
        f"{statuses.count('same')} the same"
    )
    before, after = marks(sys.stdout)
    for c in changes:
        print_examples(c.rule_id, "gained", c.gained, c.gained_examples, before, after)
        print_examples(c.rule_id, "lost", c.lost, c.lost_examples, before, after)


def print_examples(
    rule_id: str, word: str, count: int, examples: list[tuple[Post, Spans]], before: str, after: str
) -> None:
    if not count:
        return
    print(
        f"\n{rule_id} {word} {count:,}" + (f", the newest {len(examples)}:" if count > len(examples) else ":")
    )
    for post, spans in examples:
        print("   " + render_post(post, spans, before, after).replace("\n", "\n   "))


def diff_json(diff: Diff, directory: Path, against: str) -> dict[str, Any]:
    return {
        "rules": str(directory),
        "against": against,
        "read": diff.read,
        "changes": [
            {
                "rule": c.rule_id,
                "status": c.status,
                "before": c.lost + c.unchanged,
                "now": c.gained + c.unchanged,
                "gained": c.gained,
                "lost": c.lost,
                "unchanged": c.unchanged,
                "gained_examples": [post_json(post, spans) for post, spans in c.gained_examples],
                "lost_examples": [post_json(post, spans) for post, spans in c.lost_examples],
            }
            for c in diff.changes.values()
        ],
    }


# -- shared ----------------------------------------------------------------------------------------------


def matcher_of(rules: Sequence[Rule], settings: Settings) -> Matcher:
    """The matcher the service would build for `rules`: the configured engine and per-post limits."""
    return Matcher(
        rules,
        engine=settings.engine,
        max_text=settings.detector.max_text,
        max_positions=settings.detector.max_positions,
    )


def checked_accounts(values: Sequence[str] | None) -> list[str]:
    """The --account values, each in a form rules take; UsageError naming the one that is not."""
    for value in values or ():
        try:
            parse_account(value)
        except ValueError as error:
            raise UsageError(f"--account {error}") from None
    return list(values or ())


def filters_said(since: datetime | None, accounts: Sequence[str]) -> str:
    said = f" posted since {since:%Y-%m-%d %H:%M} UTC" if since else ""
    return said + (f" by {', '.join(printable(a) for a in accounts)}" if accounts else "")


def marks(stream: TextIO) -> tuple[str, str]:
    """Bold on a terminal (unless NO_COLOR is set); [[ ]] in a pipe or a file, where escapes are noise."""
    if stream.isatty() and not os.environ.get("NO_COLOR"):
        return BOLD, RESET
    return PLAIN_MARKS


def render_post(post: Post, spans: Spans, before: str, after: str) -> str:
    """Who posted it where and when, its key, then the text with the spans marked, then the link. A post's
    control characters never reach the terminal."""
    text, moved = printable_with_spans(post.text, spans)
    kind = f" · {post.kind}" if post.kind != "post" else ""
    lines = [
        printable(
            f"@{post.author} on {platform_name(post.platform)} · {post.created_at:%Y-%m-%d %H:%M} UTC{kind}"
            f" · {post.key}"
        ),
        "   " + highlight(text, moved, before, after).replace("\n", "\n   "),
    ]
    if post.url:
        lines.append(f"   {printable(post.url)}")
    return "\n".join(lines)


def post_json(post: Post, spans: Spans) -> dict[str, Any]:
    """A post for --json: every character kept (escaped on output), spans as [start, end, term]."""
    return {
        "key": post.key,
        "platform": post.platform,
        "author": post.author,
        "created_at": iso(post.created_at),
        "kind": post.kind,
        "lang": post.lang,
        "url": post.url,
        "text": post.text,
        "spans": [list(span) for span in spans],
    }
