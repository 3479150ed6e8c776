"""The matching engine: every literal of every rule in one Aho-Corasick automaton, then boolean checks.

A post is folded (bot.detect.normalize) into a line of words, " word word word ", and the automaton finds
every rule literal in it in one pass: a key " cage match " only matches whole words, a key " fight" (from
fight*) matches words that start with it, and a phrase also has its joined form (" cagematch "). A rule
becomes a candidate only when a term it cannot match without is found (for "show NEAR/3 (face OR ring)",
face or ring, not every "show"), and only candidates' query trees are evaluated, so the cost of a post does
not grow with rules whose words it does not contain. Spans are mapped back to the original text. A batch of
posts (a poll) is scanned in one call (match_all): for a short post, the call costs more than the scan.

Work per post is bounded whatever the post holds: only its first `max_text` characters are matched, a term
counts at most its first `max_positions` occurrences, and NEAR is decided in one sweep over sorted positions
rather than pair by pair, so a post of one phrase repeated thousands of times costs time linear in its length.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

from bot.detect.normalize import WordSpans, fold_line
from bot.detect.query import And, Near, Node, Not, Or, Term, necessary_terms, terms_of
from bot.detect.rules import Rule, load_rules
from bot.detect.scanners import make_scanner
from bot.models import Hit, Post, Span

__all__ = ["Matcher", "Rule", "load_rules"]

Occurrence = tuple[int, int]  # first and last word index, inclusive
# Above X's longest post (25,000 characters); a longer text (an article, a hostile line) is matched on
# its start.
MAX_TEXT = 50_000
# A term's occurrences beyond this many in one post add nothing a reader needs and would bloat the hit's
# spans.
MAX_POSITIONS = 1_000
# Folded lines are scanned this many characters at a time: enough that the call per batch costs nothing
# beside the scan, few enough that the joined copy of a batch stays a few MiB.
SCAN_CHARS = 1_000_000


class Matcher:
    def __init__(
        self,
        rules: Iterable[Rule],
        engine: str = "pyahocorasick",
        index_every_term: bool = False,
        max_text: int = MAX_TEXT,
        max_positions: int = MAX_POSITIONS,
        scan_chars: int = SCAN_CHARS,
    ) -> None:
        """`index_every_term` makes a rule a candidate whenever any of its terms is found, not only one it
        cannot match without (the same hits, more evaluations: the baseline of tests and benchmarks).
        `max_text` characters of each post are matched, and `max_positions` occurrences of each term count.
        A batch of posts is scanned `scan_chars` characters of folded text at a time."""
        self.rules = list(rules)
        self.scan_chars = scan_chars
        self.max_text = max_text
        self.max_positions = max_positions
        self._term_ids: dict[Term, int] = {}
        self._rules_of_term: list[set[int]] = []
        keys: dict[str, set[tuple[int, int]]] = defaultdict(set)
        for rule_index, rule in enumerate(self.rules):
            for term in terms_of(rule.node):
                term_id = self._term_ids.setdefault(term, len(self._term_ids))
                if term_id == len(self._rules_of_term):
                    self._rules_of_term.append(set())
                    for key, width in automaton_keys(term):
                        keys[key].add((term_id, width))
            needed = None if index_every_term else necessary_terms(rule.node)
            for term in needed if needed is not None else terms_of(rule.node):
                self._rules_of_term[self._term_ids[term]].add(rule_index)
        self._scanner = make_scanner(engine, {key: tuple(entries) for key, entries in keys.items()})
        # Most rules apply to every post: checking their scopes for each candidate is a call for nothing.
        self._scoped = [rule.scoped for rule in self.rules]

    def match(self, post: Post) -> list[Hit]:
        """Every rule that fires on the first `max_text` characters of `post`, with spans over its original
        text."""
        return self.match_all([post])[0]

    def match_all(self, posts: Sequence[Post], lines: Sequence[str] | None = None) -> list[list[Hit]]:
        """`match` for each post, in order: the same hits, with the scanner called once per batch of posts
        rather than once per post. `lines`, when given, are the posts' whole texts already folded by
        fold_line (the detector folds each post once, for the scorer and for this); a post longer than
        `max_text` is folded again here on its start."""
        texts = [post.text[: self.max_text] for post in posts]
        if lines is None:
            lines = [fold_line(text) for text in texts]
        else:
            lines = [
                line if len(text) == len(post.text) else fold_line(text)
                for post, text, line in zip(posts, texts, lines, strict=True)
            ]
        hits: list[list[Hit]] = [[] for _ in posts]
        for index, found in self._terms_by_line(lines).items():
            hits[index] = self._hits(posts[index], texts[index], found)
        return hits

    def _hits(self, post: Post, text: str, found: dict[int, list[Occurrence]]) -> list[Hit]:
        context = _Context(text, found, self._term_ids)
        hits = []
        key = post.key
        for index in self.candidates_of(found):
            rule = self.rules[index]
            if self._scoped[index] and not rule.applies_to(post):
                continue
            spans = context.spans_of(rule.node)
            if spans:
                hits.append(Hit(key, rule.id, rule.category, rule.severity, spans))
        return hits

    def candidates_of(self, found: dict[int, list[Occurrence]]) -> list[int]:
        """The indexes of the rules worth evaluating, given the terms found in a post."""
        return sorted({r for term_id in found for r in self._rules_of_term[term_id]})

    def find_terms(self, text: str) -> dict[int, list[Occurrence]]:
        """Term id -> where its literals occur in the folded text (first and last word index), at most
        `max_positions` occurrences per term, the first ones."""
        return self._terms_by_line([fold_line(text)]).get(0, {})

    def _terms_by_line(self, lines: Sequence[str]) -> dict[int, dict[int, list[Occurrence]]]:
        """find_terms for each folded line that holds a term, by the line's index; lines without are left
        out. Lines are scanned in runs of about `scan_chars` characters, so the joined copy stays small."""
        by_line: dict[int, dict[int, list[Occurrence]]] = {}
        for first, batch in _batches(lines, self.scan_chars):
            for line, last, (term_id, width) in self._scanner.scan_lines(batch):
                occurrences = by_line.setdefault(first + line, {}).setdefault(term_id, [])
                if len(occurrences) < self.max_positions:
                    occurrences.append((last - width + 1, last))
        return by_line


def _batches(lines: Sequence[str], chars: int) -> Iterator[tuple[int, Sequence[str]]]:
    """(index of the first line, lines) in runs of about `chars` characters (more for a longer line)."""
    start, size = 0, 0
    for index, line in enumerate(lines):
        size += len(line)
        if size >= chars:
            yield start, lines[start : index + 1]
            start, size = index + 1, 0
    if start < len(lines):
        yield start, lines[start:]


def automaton_keys(term: Term) -> list[tuple[str, int]]:
    """The literals that stand for `term`, with how many words each spans."""
    closing = "" if term.prefix else " "
    keys = [(" " + " ".join(term.words) + closing, len(term.words))]
    if len(term.words) > 1 and not term.marker:
        keys.append((" " + "".join(term.words) + closing, 1))  # cagefight, #CageFight
    return keys


def _close_to(ours: list[Occurrence], theirs: list[Occurrence], distance: int) -> set[Occurrence]:
    """Each of `ours` that has one of `theirs` at most `distance` words away (or overlapping it).

    `a` and `b` are that close when b starts by a's last word + distance + 1 and ends from a's first word -
    distance - 1. Taking `ours` by last word and `theirs` by first word, the ones that start early enough only
    grow in number, so one sweep keeping the furthest end among them answers every `a`: linear after sorting,
    where checking every pair is quadratic in a post that repeats both sides."""
    theirs = sorted(theirs)
    close, seen, furthest_end = set(), 0, -1
    for first, last in sorted(ours, key=lambda occurrence: occurrence[1]):
        while seen < len(theirs) and theirs[seen][0] <= last + distance + 1:
            furthest_end = max(furthest_end, theirs[seen][1])
            seen += 1
        if seen and furthest_end >= first - distance - 1:
            close.add((first, last))
    return close


class _Context:
    """One post's evaluation: the terms found in it, and (only if needed) its words' original spans."""

    def __init__(self, text: str, found: dict[int, list[Occurrence]], term_ids: dict[Term, int]) -> None:
        self.text = text
        self.found = found
        self.term_ids = term_ids
        self.word_spans = WordSpans(text)  # folded word index -> original [start, end), when first asked
        self.terms_at: dict[Occurrence, str] = {}

    def spans_of(self, root: Node) -> tuple[Span, ...]:
        """The original-text spans that make `root` hold; empty when it does not hold."""
        self.terms_at = {}
        occurrences = self.evaluate(root)
        return self.spans(occurrences) if occurrences else ()

    def evaluate(self, node: Node) -> list[Occurrence] | None:
        """None when `node` does not hold, else the occurrences that make it hold (none for a bare NOT)."""
        if isinstance(node, Term):
            return self.term(node) or None
        if isinstance(node, Not):
            return None if self.evaluate(node.part) else []
        if isinstance(node, And):
            results = []
            for part in node.parts:
                result = self.evaluate(part)
                if result is None:
                    return None
                results.extend(result)
            return results
        if isinstance(node, Or):
            held = [r for r in (self.evaluate(p) for p in node.parts) if r is not None]
            return [o for r in held for o in r] if held else None
        return self.near(node)

    def term(self, term: Term) -> list[Occurrence]:
        occurrences = self.found.get(self.term_ids[term], [])
        if term.marker:
            occurrences = [o for o in occurrences if self._preceded_by(o[0], term.marker)]
        for occurrence in occurrences:
            self.terms_at.setdefault(occurrence, term.text)
        return occurrences

    def near(self, node: Near) -> list[Occurrence] | None:
        """The occurrences of either side that have one of the other side within `distance` words."""
        left, right = self.evaluate(node.left) or [], self.evaluate(node.right) or []
        close = _close_to(left, right, node.distance) | _close_to(right, left, node.distance)
        return sorted(close) or None

    def _preceded_by(self, word: int, marker: str) -> bool:
        start = self.word_spans[word][0]
        return start > 0 and self.text[start - 1] == marker

    def spans(self, occurrences: list[Occurrence]) -> tuple[Span, ...]:
        spans = set()
        word_spans = self.word_spans
        for first, last in occurrences:
            start, end = word_spans[first][0], word_spans[last][1]
            term = self.terms_at.get((first, last), "")
            if term[:1] in ("#", "@") and start > 0 and self.text[start - 1] == term[0]:
                start -= 1
            spans.add(Span(start, end, term))
        return tuple(sorted(spans, key=lambda s: (s.start, s.end)))
