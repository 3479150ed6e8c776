"""X API v2 JSON as X serves it, for `responses` to answer tweepy's real requests with."""

from __future__ import annotations

from typing import Any

API = "https://api.twitter.com/2"  # the host tweepy calls
USERS = {"elonmusk": "44196397", "finkd": "4", "BleacherReport": "890891"}


def user(username: str) -> dict[str, str]:
    return {"id": USERS[username], "name": username.title(), "username": username}


def tweet(id: str, text: str, author: str = "elonmusk", **fields: Any) -> dict[str, Any]:
    body = {
        "id": id,
        "text": text,
        "author_id": USERS[author],
        "created_at": "2023-06-21T02:58:00.000Z",
        "conversation_id": id,
        "lang": "en",
        "edit_history_tweet_ids": [id],
    }
    body.update(fields)
    return body


def timeline(
    *tweets: dict[str, Any],
    next_token: str | None = None,
    users: tuple[str, ...] = ("elonmusk",),
    included: tuple[dict[str, Any], ...] = (),
) -> dict:
    """A page of posts; `included` are the posts they refer to, which X puts in `includes.tweets`."""
    if not tweets:
        return {"meta": {"result_count": 0}}
    ids = sorted((int(t["id"]) for t in tweets), reverse=True)
    meta: dict[str, Any] = {"result_count": len(tweets), "newest_id": str(ids[0]), "oldest_id": str(ids[-1])}
    if next_token:
        meta["next_token"] = next_token
    includes: dict[str, Any] = {"users": [user(u) for u in users]}
    if included:
        includes["tweets"] = list(included)
    return {"data": list(tweets), "includes": includes, "meta": meta}


def users_found(*usernames: str) -> dict[str, Any]:
    return {"data": [user(u) for u in usernames]}
