"""HTML to the plain text the rules read, one converter for every source that gets HTML (Mastodon's status
content, RSS and Atom descriptions).

What a reader sees is what the rules get: blocks (paragraphs, headings, list items...) become paragraphs apart
by a blank line, <br> a line break, links, mentions (@user) and hashtags (#tag) their text, entities decoded,
runs of spaces (a non-breaking space and the other Unicode spaces too) one space. Scripts, styles and elements
with a class the caller names (Mastodon's `quote-inline` "RE: link" paragraph) are left out. Which element a
text is in is tracked with a stack of open elements, closed the way a browser closes them, so a tag left open
inside a skipped element never swallows the rest of the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser

BLOCKS = frozenset(
    "p div section article header footer main nav aside address blockquote pre figure figcaption details "
    "summary ul ol li table caption tr h1 h2 h3 h4 h5 h6 hr dl dt dd".split()
)
SKIPPED_TAGS = frozenset({"script", "style", "template", "noscript"})
# Elements that never have an end tag: they are never open, so they cannot hold text back.
VOID_TAGS = frozenset("area base br col embed hr img input link meta source track wbr param keygen".split())
OTHER_TAGS = frozenset(  # inline and document elements
    "a abbr b bdi bdo big cite code del dfn em font i ins kbd mark q s samp small span strong sub sup time "
    "tt u var body html head title center".split()
)
# A tag of one of these names in text is markup, not a reader's `<3` or `<Enter>`.
KNOWN_TAGS = BLOCKS | SKIPPED_TAGS | VOID_TAGS | OTHER_TAGS
_TAG = re.compile(r"</?([a-zA-Z][a-zA-Z0-9]*)(?:\s[^<>]*)?/?>")


class _TextMaker(HTMLParser):
    """Collects the text of the elements not left out, as lines; blocks add a blank line around them."""

    def __init__(self, skip_classes: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.skip_classes = skip_classes
        self.lines: list[str] = [""]
        self.open: list[tuple[str, bool]] = []  # (tag, left out) of each open element, outermost first

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs)
        if tag not in VOID_TAGS:
            self.open.append((tag, tag in SKIPPED_TAGS or self._has_skipped_class(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, attrs)  # `<x/>` opens nothing: HTML has no empty non-void elements to wait for

    def handle_endtag(self, tag: str) -> None:
        # As a browser does: an end tag closes its nearest open element and everything opened inside it
        # (left open by mistake); an end tag with nothing to close is ignored.
        self._close(tag)
        if tag in BLOCKS:
            self.lines += ["", ""]

    def handle_data(self, data: str) -> None:
        if any(skipped for _, skipped in self.open):
            return
        if any(tag == "pre" for tag, _ in self.open):  # preformatted: its line breaks are the writer's
            first, *rest = data.split("\n")
            self.lines[-1] += first
            self.lines += rest
        else:
            self.lines[-1] += data

    def _start(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in BLOCKS:
            self._close("p")  # a block never sits inside a paragraph: its start ends an open <p>
            self.lines += ["", ""]
        elif tag == "br":
            self.lines.append("")

    def _close(self, tag: str) -> None:
        for depth in range(len(self.open) - 1, -1, -1):
            if self.open[depth][0] == tag:
                del self.open[depth:]
                return

    def _has_skipped_class(self, attrs: list[tuple[str, str | None]]) -> bool:
        classes = (dict(attrs).get("class") or "").split()
        return any(name in self.skip_classes for name in classes)

    def text(self) -> str:
        # str.split() with no separator splits on every Unicode space (NBSP, thin space, ideographic space...)
        lines = [" ".join(line.split()) for line in self.lines]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str, skip_classes: Iterable[str] = ()) -> str:
    """`markup` as plain text (see the module's docstring), leaving out elements with any class in
    `skip_classes`. Never raises on broken HTML: what cannot be read as a tag is read as text."""
    maker = _TextMaker(frozenset(skip_classes))
    maker.feed(markup)
    maker.close()
    return maker.text()


def holds_markup(text: str) -> bool:
    """Whether `text` holds an HTML tag (`<p>`, `</a>`, `<br/>`...); a `<3` or `<Enter>` is not one."""
    return any(match.group(1).lower() in KNOWN_TAGS for match in _TAG.finditer(text))
