"""The one HTML-to-text converter every source uses (Mastodon's content, RSS and Atom descriptions)."""

from __future__ import annotations

import pytest

from bot.sources.html_text import holds_markup, html_to_text

QUOTE = ("quote-inline",)  # what Mastodon's source leaves out: the "RE: link" paragraph kept for old clients

# (what the case is, the HTML, the classes left out, the text the rules read)
CASES = [
    ("nothing", "", (), ""),
    ("a script is left out", "<p>Fight me<script>alert(1)</script></p>", (), "Fight me"),
    ("a style is left out", "<style>p { color: red }</style><p>Fight me</p>", (), "Fight me"),
    ("separate blocks stay apart", "<p>a</p><div>b</div><h1>c</h1>", (), "a\n\nb\n\nc"),
    ("list items stay apart", "<ul><li>one</li><li>two</li></ul>", (), "one\n\ntwo"),
    ("a non-breaking space is a space", "<p>hi&nbsp;there &lt;3</p>", (), "hi there <3"),
    ("Unicode spaces are spaces", "<p>a\u2009b\u3000c\u202fd\u00a0\u00a0e</p>", (), "a b c d e"),
    ("a line break in the source is a space", "<p>one\ntwo\r\n  three</p>", (), "one two three"),
    ("a preformatted block keeps its line breaks", "<pre>a  b\nc</pre><p>d</p>", (), "a b\nc\n\nd"),
    ("paragraphs and <br> are kept", "<p>a<br/>b</p><p></p><p>c &lt;3</p>", (), "a\nb\n\nc <3"),
    ("entities are decoded", "<p>I&#39;m &amp; you&#8217;re &eacute;&#x1F94A;</p>", (), "I'm & you’re é🥊"),
    (
        "the quote fallback is left out",
        '<p class="quote-inline">RE: <a href="https://m.s/@a/1"><span class="invisible">https://</span>'
        '<span class="ellipsis">m.s/@a</span><span class="invisible">/1</span></a></p><p>yoooooooo</p>',
        QUOTE,
        "yoooooooo",
    ),
    (
        "a link left open in the quote fallback does not swallow the status",
        '<p class="quote-inline">RE: <a href="x">link</p><p>real text</p>',
        QUOTE,
        "real text",
    ),
    (
        "a quote fallback span with a link left open ends with the span",
        '<p><span class="quote-inline">RE: <a href="x">link</span> after</p>',
        QUOTE,
        "after",
    ),
    (
        "a quote fallback paragraph left open ends where the next paragraph starts",
        '<p class="quote-inline">RE: <a href="x">link<p>real text</p>',
        QUOTE,
        "real text",
    ),
    ("an empty quote fallback hides nothing", '<span class="quote-inline"/>after', QUOTE, "after"),
    (
        "without the class named, the quote fallback is text",
        '<p class="quote-inline">RE: <a href="x">link</p><p>real text</p>',
        (),
        "RE: link\n\nreal text",
    ),
    (
        "mentions, hashtags and links read as their text",
        "<p>I&#39;m up for a cage match if he is lol<br>seriously &amp; truly</p>"
        '<p><span class="h-card"><a href="https://meta.social/@zuck" class="u-url mention">@<span>zuck</span>'
        '</a></span> <a href="https://mastodon.social/tags/mma" class="mention hashtag">'
        "#<span>mma</span></a> "
        '<a href="https://example.com/fight"><span class="invisible">https://</span>'
        '<span class="">example.com/fight</span><span class="invisible"></span></a></p>',
        QUOTE,
        "I'm up for a cage match if he is lol\nseriously & truly\n\n@zuck #mma https://example.com/fight",
    ),
    (
        "an RSS description keeps its paragraphs, line breaks and link text",
        '<p>Cage match?</p><p>Name the <a href="https://x.com/x">place</a>,<br>I&#8217;ll be there &amp; '
        "ready</p>",
        (),
        "Cage match?\n\nName the place,\nI’ll be there & ready",
    ),
    ("a stray end tag is ignored", "<p>a</span>b</p>", (), "ab"),
    ("what cannot be a tag is text", "x<b c d", (), "x<b c d"),
]


@pytest.mark.parametrize(("markup", "skip", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_html_becomes_the_text_a_reader_sees(markup, skip, expected):
    assert html_to_text(markup, skip_classes=skip) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<p>Cage match &amp; more</p>", True),
        ('Read <a href="https://x.com">this</a>', True),
        ("one<br/>two", True),
        ("I <3 a good fight", False),
        ("Press <Enter> to start", False),
        ("x<b c d", False),
        ("a < b > c", False),
    ],
)
def test_markup_is_told_apart_from_angle_brackets_in_text(text, expected):
    assert holds_markup(text) is expected
