"""The rule query language, as social-listening tools (Brandwatch, Talkwalker) spell it.

    "cage match" OR octagon                 a quoted phrase, a word
    (fight OR combat) AND cage              AND, OR, parentheses; words side by side are ANDed
    octagon NOT (shape OR geometry)         NOT excludes
    cage NEAR/3 fight                       within 3 words of each other, either order
    fight*                                  prefix wildcard: fight, fighter, fights
    #cagematch   @zuck   🥊                 a hashtag, a mention, an emoji

Words and phrases are folded like post text (case, accents, styled letters), and a phrase also matches its
hyphenated, joined and hashtag forms: "cage fight" = cage-fight = cagefight = #CageFight = #cage_fight.

`parse` turns a query into a tree of Term, And, Or, Not and Near nodes, or raises QuerySyntaxError with the
column. Limits that keep matching cheap are checked here, so a rule that could blow up is refused at load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.detect.normalize import words

MAX_QUERY_LENGTH = 4000
MAX_TERMS = 300
MAX_DEPTH = 12
MAX_NEAR = 50
MIN_PREFIX = 3


class QuerySyntaxError(ValueError):
    """The query cannot be used; `column` (1-based) is where the problem is."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.column = column


@dataclass(frozen=True)
class Term:
    """A word or phrase: folded words, `prefix` when the last word ends in *, `marker` '#' or '@' or ''."""

    text: str
    words: tuple[str, ...]
    prefix: bool = False
    marker: str = ""


@dataclass(frozen=True)
class And:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    part: Node


@dataclass(frozen=True)
class Near:
    left: Node
    right: Node
    distance: int


Node = Term | And | Or | Not | Near

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>\() | (?P<close>\)) |
        "(?P<phrase>[^"]*)(?P<closed>"?) |
        (?P<near>NEAR/(?P<distance>\d+))(?=[\s()"]|$) |
        (?P<op>AND|OR|NOT)(?=[\s()"]|$) |
        (?P<word>[^\s()"]+)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # open, close, phrase, near, op, word, end
    text: str
    column: int
    distance: int = 0


def _tokens(query: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(query):
        match = _TOKEN.match(query, position)
        if match is None or match.end() == position:
            break
        kind = next(
            k for k in ("open", "close", "phrase", "near", "op", "word") if match.group(k) is not None
        )
        column = match.start(kind) + 1
        if kind == "phrase" and not match.group("closed"):
            raise QuerySyntaxError('this quote is never closed: add the closing "', column - 1)
        text = match.group(kind)
        distance = int(match.group("distance")) if kind == "near" else 0
        tokens.append(_Token(kind, text, column - (1 if kind == "phrase" else 0), distance))
        position = match.end()
    tokens.append(_Token("end", "", len(query) + 1))
    return tokens


class _Parser:
    def __init__(self, query: str) -> None:
        self.tokens = _tokens(query)
        self.index = 0
        self.terms = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.token
        self.index += 1
        return token

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise QuerySyntaxError("the query is empty", 1)
        node = self.parse_or(0)
        if self.token.kind != "end":
            raise QuerySyntaxError(f"unexpected {self.token.text!r}", self.token.column)
        return node

    def parse_or(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise QuerySyntaxError(f"nested deeper than {MAX_DEPTH} levels", self.token.column)
        parts = [self.parse_and(depth)]
        while self.token.kind == "op" and self.token.text == "OR":
            self.take()
            parts.append(self.parse_and(depth))
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def parse_and(self, depth: int) -> Node:
        parts = [self.parse_not(depth)]
        while self.token.kind in ("op", "open", "phrase", "word") and self.token.text != "OR":
            if self.token.kind == "op" and self.token.text == "AND":
                self.take()
            parts.append(self.parse_not(depth))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def parse_not(self, depth: int) -> Node:
        if self.token.kind == "op" and self.token.text == "NOT":
            # Each NOT is a level, as a parenthesis is: a thousand of them would exhaust the recursion.
            if depth > MAX_DEPTH:
                raise QuerySyntaxError(f"nested deeper than {MAX_DEPTH} levels", self.token.column)
            self.take()
            return Not(self.parse_not(depth + 1))
        return self.parse_near(depth)

    def parse_near(self, depth: int) -> Node:
        node = self.parse_atom(depth)
        while self.token.kind == "near":
            near = self.take()
            if not 0 <= near.distance <= MAX_NEAR:
                raise QuerySyntaxError(
                    f"NEAR/{near.distance} is too far; at most NEAR/{MAX_NEAR}", near.column
                )
            right = self.parse_atom(depth)
            for side in (node, right):
                _check_near_operand(side, near.column)
            node = Near(node, right, near.distance)
        return node

    def parse_atom(self, depth: int) -> Node:
        token = self.take()
        if token.kind == "open":
            node = self.parse_or(depth + 1)
            if self.token.kind != "close":
                raise QuerySyntaxError("expected ')' to close the '(' here", token.column)
            self.take()
            return node
        if token.kind in ("phrase", "word"):
            return self.term(token)
        if token.kind == "end":
            raise QuerySyntaxError("the query ends where a word, phrase or '(' was expected", token.column)
        raise QuerySyntaxError(f"expected a word, phrase or '(' but found {token.text!r}", token.column)

    def term(self, token: _Token) -> Term:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise QuerySyntaxError(f"more than {MAX_TERMS} words and phrases in one rule", token.column)
        text = token.text.strip()
        marker = text[0] if token.kind == "word" and text[:1] in ("#", "@") else ""
        body = text[len(marker) :]
        prefix = body.endswith("*")
        if "*" in body.rstrip("*") or body.count("*") > 1:
            raise QuerySyntaxError("'*' only goes at the end of a word, as in fight*", token.column)
        folded = tuple(words(body.rstrip("*")))
        if not folded:
            raise QuerySyntaxError(f"{token.text!r} has no letters, digits or emoji to match", token.column)
        if prefix and len(folded[-1]) < MIN_PREFIX:
            raise QuerySyntaxError(
                f"{token.text!r}: a wildcard needs at least {MIN_PREFIX} letters before '*' "
                "(a shorter one matches too much)",
                token.column,
            )
        return Term(text=text, words=folded, prefix=prefix, marker=marker)


def _check_near_operand(node: Node, column: int) -> None:
    if isinstance(node, Term):
        return
    if isinstance(node, Or) and all(isinstance(part, Term) for part in node.parts):
        return
    raise QuerySyntaxError("NEAR joins words, phrases or (a OR b) groups of them", column)


def parse(query: str) -> Node:
    """The tree of `query`. Raises QuerySyntaxError naming the column of the problem."""
    if len(query) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(f"the query is longer than {MAX_QUERY_LENGTH} characters", MAX_QUERY_LENGTH)
    node = _Parser(query).parse()
    if not has_positive_term(node):
        raise QuerySyntaxError("the query only excludes (NOT ...); it needs something to look for", 1)
    return node


def has_positive_term(node: Node) -> bool:
    """Whether the query can match by finding something, not merely by not finding something."""
    if isinstance(node, Term | Near):
        return True
    if isinstance(node, Not):
        return False
    if isinstance(node, And):
        return any(has_positive_term(p) for p in node.parts)
    return all(has_positive_term(p) for p in node.parts)


def terms_of(node: Node) -> list[Term]:
    """Every Term in the tree, in order."""
    if isinstance(node, Term):
        return [node]
    if isinstance(node, Not):
        return terms_of(node.part)
    if isinstance(node, Near):
        return terms_of(node.left) + terms_of(node.right)
    return [term for part in node.parts for term in terms_of(part)]


def necessary_terms(node: Node) -> frozenset[Term] | None:
    """Terms of which at least one must be in a post for `node` to hold; None when it can hold with none of
    them (a bare NOT).

    The matcher makes a rule a candidate only when one of these is found, so a rule is indexed under the terms
    it cannot match without: for an AND or a NEAR that is one side, the one least likely to be in any post
    ("show NEAR/3 (face OR ring)" waits for face or ring, not for every "show")."""
    if isinstance(node, Term):
        return frozenset({node})
    if isinstance(node, Not):
        return None
    if isinstance(node, Or):
        sides = [necessary_terms(part) for part in node.parts]
        return None if any(side is None for side in sides) else frozenset().union(*sides)  # type: ignore[arg-type]
    parts = [node.left, node.right] if isinstance(node, Near) else list(node.parts)
    sides = [side for side in map(necessary_terms, parts) if side is not None]
    return min(sides, key=_commonness) if sides else None


def _commonness(terms: frozenset[Term]) -> float:
    """A guess at how often a post holds one of `terms`: short single words are everywhere, phrases rare."""
    return sum(_term_commonness(term) for term in terms)


def _term_commonness(term: Term) -> float:
    if len(term.words) > 1:
        return 0.1
    if term.prefix:
        return 0.5
    return 1.0 if len(term.words[0]) <= 4 else 0.3
