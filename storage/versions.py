"""Post versions: what to write when posts are fetched again, possibly with other text.

A version is a distinct text. A post fetched again with the text it has now changes nothing; with a text it
had before (a platform that swaps a text for a policy notice and back), that version becomes current again;
with a new text (an edit), a new version is added. The `posts` row is always the current version (what search,
reports and exchanges see); `post_versions` holds every version of each post that has had more than one, and
each hit keeps the number of the version it matched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.models import Post


@dataclass
class History:
    """What is known of one post's versions, before this poll and as the poll goes on."""

    current: int
    texts: dict[str, int]  # every known text -> its version number
    in_versions: bool  # post_versions already holds every version of it
    stored: bool  # it has a row in posts from an earlier poll


@dataclass
class VersionPlan:
    """The writes one poll's posts need, planned in fetch order (a key may come more than once)."""

    histories: dict[str, History]
    numbers: dict[tuple[str, str], int] = field(default_factory=dict)  # (key, text) -> version number
    current: dict[str, tuple[Post, int]] = field(default_factory=dict)  # posts rows to insert or update
    versions: list[tuple[Post, int]] = field(default_factory=list)  # post_versions rows to insert
    archive: list[str] = field(default_factory=list)  # stored posts whose row becomes version history
    new_posts: int = 0
    _first: dict[str, Post] = field(default_factory=dict)  # posts first seen in this poll

    def add(self, post: Post) -> None:
        history = self.histories.get(post.key)
        if history is None:
            self.histories[post.key] = History(1, {post.text: 1}, in_versions=False, stored=False)
            self._first[post.key] = post
            self.numbers[(post.key, post.text)] = 1
            self.current[post.key] = (post, 1)
            self.new_posts += 1
            return
        number = history.texts.get(post.text)
        if number is None:
            number = max(history.texts.values()) + 1
            history.texts[post.text] = number
            self._keep_first_version(post.key, history)
            self.versions.append((post, number))
        self.numbers[(post.key, post.text)] = number
        if number != history.current:
            history.current = number
            self.current[post.key] = (post, number)

    def _keep_first_version(self, key: str, history: History) -> None:
        """Before a post's second version is written, its first goes into post_versions too."""
        if history.in_versions:
            return
        if history.stored:
            self.archive.append(key)  # copied from its posts row, in SQL, before that row changes
        else:
            self.versions.append((self._first[key], 1))
        history.in_versions = True
