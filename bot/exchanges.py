"""Exchange detection: link a challenge to its answer across accounts and platforms.

The model case: Musk posts "I'm up for a cage match if he is lol" on X; a day later Zuckerberg posts "Send Me
Location" on Instagram. The answer has no fight word, is on another platform and is not a platform reply;
what links it is who said it, to whom, and when.

A post by a tracked person links to a rival's trigger (a hit that is not only a `response`, or a turn of an
exchange) when, in this order:
  - it replies to it or quotes it (platform ids);              link "reply" / "quote"
  - it mentions one of the rival's accounts;                     link "mention"
  - it comes within the window after it and matches a response
    rule ("send me location", "chiche", ...);                    link "response"
  - it comes within the window and is itself a challenge, taunt
    or rivalry hit: a counter-challenge;                         link "counter"
A response from someone who is not a rival of the trigger's author links nothing. The exchange is made at the
second turn; each later turn updates it, and each turn from the second on is one alert showing the whole
exchange. Runs inside the poll's transaction, so a restart never leaves an exchange half-made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from bot.detect.rules import SILENT_CATEGORIES
from bot.models import Hit, Post
from bot.timeutil import utcnow
from config.settings import Exchanges, Person
from storage.exchanges import StoredPost
from storage.store import Store


def link_posts(
    store: Store, config: Exchanges, posts: Sequence[Post], hits: dict[str, list[Hit]]
) -> list[dict]:
    """Link each tracked person's new post to what it answers; the alert payloads of the new turns.

    Feeds are polled apart, so an answer can be stored before the challenge it answers: when a new post is
    a challenge, the rivals' stored posts from within the window after it get their chance to link too."""
    if not config.rivalries:
        return []
    candidates = {p.key: (p, {h.category for h in hits.get(p.key, [])}) for p in posts}
    for post, categories in list(candidates.values()):
        person = config.person_of(post.platform, post.author)
        if person is not None and categories - SILENT_CATEGORIES:
            accounts = [a for rival in _rivals(config, person) for a in rival.accounts]
            until = post.created_at + timedelta(seconds=config.window)
            for earlier in store.unlinked_posts(accounts, post.created_at, until):
                candidates.setdefault(earlier[0].key, earlier)
    payloads = []
    for post, categories in sorted(candidates.values(), key=lambda c: c[0].created_at):
        person = config.person_of(post.platform, post.author)
        if person is None:
            continue
        found = find_link(store, config, post, _rivals(config, person), categories)
        if found is None:
            continue
        target, owner, link = found
        exchange_id = store.exchange_of(target.key)
        if exchange_id is None:
            exchange_id = exchange_key(target.key)
            store.start_exchange(
                exchange_id, [owner.id, person.id], store.severity_of(target.key), target, owner.id
            )
        turn = store.add_turn(exchange_id, post.key, post.created_at, person.id, link)
        if turn:
            payloads.append(exchange_payload(store.exchange(exchange_id), turn, config))
    store.cool_exchanges(utcnow() - timedelta(seconds=config.cool_after))
    return payloads


def _rivals(config: Exchanges, person: Person) -> list[Person]:
    return [p for p in config.people if p.id in config.rivals_of(person.id)]


def find_link(
    store: Store, config: Exchanges, post: Post, rivals: Sequence[Person], categories: set[str]
) -> tuple[StoredPost, Person, str] | None:
    """What `post` answers, whose it is, and how it links; None when it answers nothing."""
    accounts = sorted(a for rival in rivals for a in rival.accounts)
    if not accounts:
        return None
    for reference, link in ((post.reply_to, "reply"), (post.quote_of, "quote")):
        target = store.post_by_id(post.platform, reference) if reference else None
        owner = config.person_of(target.platform, target.author) if target else None
        if target and owner in rivals and store.is_trigger(target.key, sorted(SILENT_CATEGORIES)):
            return target, owner, link
    mentioned = bool({f"{post.platform}:{m.lower()}" for m in post.mentions} & set(accounts))
    link = (
        "mention"
        if mentioned
        else "response"
        if "response" in categories
        else ("counter" if categories - SILENT_CATEGORIES else None)
    )
    if link is None:
        return None
    since = post.created_at - timedelta(seconds=config.window)
    target = store.latest_trigger(accounts, since, post.created_at, sorted(SILENT_CATEGORIES))
    if target is None:
        return None
    owner = config.person_of(target.platform, target.author)
    return (target, owner, link) if owner else None


def exchange_key(first_post_key: str) -> str:
    return "ex-" + hashlib.sha256(first_post_key.encode()).hexdigest()[:16]


def exchange_payload(exchange: dict[str, Any], turn: int, config: Exchanges) -> dict[str, Any]:
    """One alert showing the whole exchange; its key is per turn, its thread key per exchange."""
    names = {p.id: p.name for p in config.people}
    exchange = {**exchange, "names": [names.get(p, p) for p in exchange["people"]]}
    for item in exchange["posts"]:
        item["name"] = names.get(item["person"], item["person"])
    digest = hashlib.sha256(f"{exchange['id']}\x00{turn}".encode()).hexdigest()[:32]
    follows = (
        hashlib.sha256(f"{exchange['id']}\x00{turn - 1}".encode()).hexdigest()[:32] if turn > 2 else None
    )
    return {
        "kind": "exchange",
        "key": f"rs1x-{digest}",
        "thread": exchange["id"],
        "turn": turn,
        "follows": f"rs1x-{follows}" if follows else None,
        "exchange": exchange,
    }
