"""Matching benchmark: posts/second of the engine against one Python `re` alternation, in the same run.

    .venv/bin/python bench/match.py [--posts 200000] [--seed 7] [--rules 100,1000,10000] [--batch 2000]
                                    [--worst-only]

Two corpora per rule set: a seeded one of English and French posts (10-40 words, accents included) where a
few percent carry a rule phrase, and the labelled corpus's texts (six languages, emoji, curly quotes, taken
in turn up to --posts; the generated rules find nothing in it, so its figure is folding and scanning). Rules
are generated: phrases of one to three words, some ORs, NOTs, NEARs and wildcards. The engine's figure
includes folding (case, accents, compatibility forms), the automaton pass and the boolean checks of
candidate rules, with posts matched `--batch` at a time as the detector matches a poll (Matcher.match_all:
one scanner call per batch). The baseline is one compiled `re` alternation of the same phrases with word
boundaries and IGNORECASE over the raw text (no accent folding, no boolean logic): less work, far slower.
The baseline is timed on a slice of the corpus when a full pass would take minutes; the slice is printed.
These machines are shared and their speed wanders by a third from one second to the next: figures are in
CPU seconds of this process, the engine makes several passes and prints the best and the median; the ratio
uses the median. In the same rounds: `one by one` is Matcher.match post by post (a scanner call per post),
`before` the same with the fold as it was before (fold_line_before, below): the matcher as it was before
batches and the Latin-1 fold, and `gain` the batched median over it.

Then the worst cases, one post each: X's longest post (25,000 characters) of "too scared fight " against the
default pack, whose NEAR rules see thousands of occurrences of both sides, and a 220 KB line of it against one
`NEAR/50` rule, with the matcher's text cap lifted so the whole line is matched, then as shipped (cut at
MAX_TEXT). Both were quadratic (2.1 s and 178 s before NEAR was swept over sorted positions).

First, folding alone (the largest part of matching), on this corpus and on the labelled corpus's texts (six
languages, emoji, curly quotes): fold_line as shipped against `fold_line_before`, the fold as it was before
Latin-1 text was folded in one bytes.translate, kept here as the baseline and checked to give the same lines.
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.detect import matcher as matcher_module
from bot.detect import normalize
from bot.detect.corpus import BLIND_DIR, TRAIN_DIR, read_dir
from bot.detect.matcher import Matcher, load_rules
from bot.detect.normalize import fold_line
from bot.detect.rules import rule_from_table
from bot.models import Post

ENGLISH = (
    "the a to of and in is it you that for on was with he as i his they be at one have this from or "
    "had by not word but what some we can out other were all there when up use your how said an each "
    "she which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people my over "
    "know water than call first who may down side been now find any new work part take get place "
    "made live where after back little only round man year came show every good me give our under "
    "name very through just form sentence great think say help low line differ turn cause much mean "
    "before move right boy old too same tell does set three want air well also play small end put "
    "home read hand port large spell add even land here must big high launch rocket team today "
    "tomorrow thanks great news update release product launch meeting podcast"
).split()
FRENCH = (
    "le la les de des du un une et est à en que qui pour dans ce il elle ne pas sur se plus par avec "
    "tout faire son mettre autre on mais nous comme ou si leur y dire deux même prendre aussi bien "
    "où sans pouvoir peu lui notre depuis quand grand très encore être avoir là après fois jour "
    "année temps équipe réussi génial merci bientôt déjà voilà première été café français télé "
    "économie société lancement fusée nouvelle semaine réunion émission présidence élève déçu prêt "
    "rêve fête"
).split()
# Posts matched at once, as the detector matches one poll (a replay batch, a backtest batch).
BATCH = 2000
SYLLABLES = ("ka zo ri mu te vla nor quen bix dra fé lu sor pim gat wen yul xar ob ème çon").split()


def pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def make_phrases(rng: random.Random, count: int) -> list[str]:
    vocabulary = sorted({pseudo_word(rng) for _ in range(count * 2)})
    return [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 3))) for _ in range(count)]


def make_rules(rng: random.Random, phrases: list[str]) -> list:
    rules = []
    for index, phrase in enumerate(phrases):
        other = rng.choice(phrases)
        shape = index % 10
        if shape < 5:
            query = f'"{phrase}"'
        elif shape < 7:
            query = f'"{phrase}" OR "{other}"'
        elif shape == 7:
            query = f'"{phrase}" NOT "{other}"'
        elif shape == 8:
            query = f'"{phrase}" NEAR/4 "{other}"'
        else:
            first = phrase.split()[0]
            query = f"{first}*" if len(first) >= 3 else f'"{phrase}"'
        rules.append(rule_from_table({"id": f"r{index}", "category": "challenge", "query": query}, "bench"))
    return rules


def make_corpus(rng: random.Random, count: int, phrases: list[str], share: float = 0.03) -> list[Post]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    posts = []
    for index in range(count):
        words = ENGLISH if index % 2 else FRENCH
        text = [rng.choice(words) for _ in range(rng.randint(10, 40))]
        if rng.random() < share:
            text.insert(
                rng.randrange(len(text)),
                rng.choice(phrases).upper() if rng.random() < 0.3 else rng.choice(phrases),
            )
        if index % 5 == 0:
            text[0] = text[0].capitalize() + ","
        posts.append(Post("bench", str(index), "someone", " ".join(text), now))
    return posts


def time_engine(matcher: Matcher, posts: list[Post], batch: int = BATCH) -> tuple[float, int]:
    """Seconds to match `posts` in batches of `batch` (as the detector matches a poll), and the hits found.
    A batch of 1 is matching post by post, as before batches."""
    # The corpus itself is hundreds of thousands of live objects that the service never holds at once;
    # freezing them keeps the cyclic collector from re-scanning them while matching.
    gc.collect()
    gc.freeze()
    try:
        started = time.process_time()
        if batch == 1:
            hits = sum(len(matcher.match(post)) for post in posts)
        else:
            hits = sum(
                len(found)
                for start in range(0, len(posts), batch)
                for found in matcher.match_all(posts[start : start + batch])
            )
        return time.process_time() - started, hits
    finally:
        gc.unfreeze()


def time_engine_folding_before(matcher: Matcher, posts: list[Post]) -> tuple[float, int]:
    """time_engine post by post with the fold as it was before (fold_line_before): the matcher as it was
    before both, the baseline of the same run."""
    shipped = matcher_module.fold_line
    matcher_module.fold_line = fold_line_before
    try:
        return time_engine(matcher, posts, batch=1)
    finally:
        matcher_module.fold_line = shipped


def time_regex(phrases: list[str], texts: list[str]) -> tuple[float, int]:
    body = "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True))
    pattern = re.compile(rf"\b(?:{body})\b", re.IGNORECASE)
    started = time.perf_counter()
    found = sum(1 for text in texts if pattern.search(text))
    return time.perf_counter() - started, found


def labelled_posts(count: int) -> list[Post]:
    """`count` posts of the labelled corpus's texts (six languages, emoji, curly quotes), taken in turn."""
    texts = [e.text for e in read_dir(TRAIN_DIR) + read_dir(BLIND_DIR)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return [Post("bench", str(index), "someone", texts[index % len(texts)], now) for index in range(count)]


def regex_baseline(phrases: list[str], posts: list[Post], seconds: float) -> tuple[float, int]:
    """Posts/s of the `re` alternation over about `seconds` of the corpus's start, and how many posts."""
    probe_seconds, _ = time_regex(phrases, [p.text for p in posts[:200]])
    sample = max(200, min(len(posts), int(200 * seconds / max(probe_seconds, 1e-9))))
    regex_seconds, _ = time_regex(phrases, [p.text for p in posts[:sample]])
    return sample / regex_seconds, sample


def time_matcher(matcher: Matcher, posts: list[Post], rounds: int, batch: int) -> tuple[float, ...]:
    """Best and median posts/s in batches, median one by one, median one by one with the fold as it was,
    and the hits (the same in all three, checked)."""
    rates, rates_single, rates_before = [], [], []
    for _ in range(rounds):  # interleaved, so a busy second of the machine weighs on all three
        seconds, hits = time_engine(matcher, posts, batch)
        rates.append(len(posts) / seconds)
        seconds, hits_single = time_engine(matcher, posts, batch=1)
        rates_single.append(len(posts) / seconds)
        seconds, hits_before = time_engine_folding_before(matcher, posts)
        rates_before.append(len(posts) / seconds)
    assert hits_before == hits_single == hits
    medians = (statistics.median(r) for r in (rates, rates_single, rates_before))
    return (max(rates), *medians, hits)


def available_engines() -> list[str]:
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return ["pyahocorasick"]
    return ["pyahocorasick", "hyperscan"]


def time_one(matcher: Matcher, text: str, rounds: int = 3) -> tuple[float, int]:
    """The best of `rounds` matches of one post, in seconds, and how many spans its hits carry."""
    post = Post("bench", "worst", "someone", text, datetime(2026, 1, 1, tzinfo=UTC))
    best, spans = float("inf"), 0
    for _ in range(rounds):
        started = time.perf_counter()
        spans = sum(len(hit.spans) for hit in matcher.match(post))
        best = min(best, time.perf_counter() - started)
    return best, spans


def fold_line_before(text: str) -> str:
    """fold_line before the Latin-1 bytes path: ASCII as bytes, any other text word by word."""
    text = normalize.join_spaced_letters(text)
    if text.isascii():
        folded = text.encode("ascii").translate(normalize._ASCII_BYTES)
        while b"  " in folded:
            folded = folded.replace(b"  ", b" ")
        return (b" " + folded.strip(b" ") + b" ").decode("ascii")
    return normalize._fold_line_by_words(text)


def time_fold(fold, texts: list[str], rounds: int) -> float:
    """The median posts/s of `fold` over `texts`, in CPU seconds of this process."""
    rates = []
    for _ in range(rounds):
        started = time.process_time()
        for text in texts:
            fold(text)
        rates.append(len(texts) / (time.process_time() - started))
    return statistics.median(rates)


def compare_folds(corpora: dict[str, list[str]], rounds: int) -> None:
    print(f"{'folding':>22} {'posts':>8} {'before posts/s':>15} {'now posts/s':>12} {'ratio':>6} {'same':>5}")
    for name, texts in corpora.items():
        same = all(fold_line(t) == fold_line_before(t) for t in texts)
        before, now = 0.0, 0.0
        for _ in range(rounds):  # interleaved, so a busy second of the machine weighs on both
            before = max(before, time_fold(fold_line_before, texts, 1))
            now = max(now, time_fold(fold_line, texts, 1))
        print(
            f"{name:>22} {len(texts):>8,} {before:>15,.0f} {now:>12,.0f} {now / before:>5.2f}x {same!s:>5}",
            flush=True,
        )


def worst_cases() -> None:
    from config import DEFAULT_RULES

    repeated = "too scared fight " * 13_000
    near = [rule_from_table({"id": "near", "category": "taunt", "query": "scared NEAR/50 fight"}, "bench")]
    cases = [
        ("25,000 chars, default pack", Matcher(load_rules(DEFAULT_RULES)), repeated[:25_000]),
        ("220 KB line, NEAR/50, whole line", Matcher(near, max_text=len(repeated)), repeated[:220_000]),
        ("220 KB line, NEAR/50, as shipped", Matcher(near), repeated[:220_000]),
    ]
    print(f"\n{'worst case':>34} {'seconds':>9} {'spans':>7}")
    for name, matcher, text in cases:
        seconds, spans = time_one(matcher, text)
        print(f"{name:>34} {seconds:>9.3f} {spans:>7,}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rules", default="100,1000,10000")
    parser.add_argument("--engines", default=",".join(available_engines()), help="pyahocorasick,hyperscan")
    parser.add_argument("--batch", type=int, default=BATCH, help="posts matched at once (1: one by one)")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the corpus; best and median shown")
    parser.add_argument(
        "--regex-seconds",
        type=float,
        default=5.0,
        help="roughly how long to let the re baseline run per rule set",
    )
    parser.add_argument("--worst-only", action="store_true", help="only the worst-case posts")
    args = parser.parse_args()
    if args.worst_only:
        worst_cases()
        return
    print(
        f"python {sys.version.split()[0]}, one core, seed {args.seed}, "
        f"{args.posts:,} posts (half en, half fr), {args.rounds} rounds"
    )
    rng = random.Random(args.seed)
    bench_texts = [p.text for p in make_corpus(rng, min(args.posts, 100_000), make_phrases(rng, 100))]
    labelled = [e.text for e in read_dir(TRAIN_DIR) + read_dir(BLIND_DIR)]
    compare_folds(
        {"this corpus (en, fr)": bench_texts, "labelled (6 languages)": labelled}, max(args.rounds, 5)
    )
    print(
        f"{'rules':>7} {'corpus':>7} {'engine':>14} {'build s':>8} {'best posts/s':>13} {'median':>9} "
        f"{'hits':>7} {'re posts/s':>11} {'re sample':>10} {'ratio':>7} {'one by one':>11} {'before':>9} "
        f"{'gain':>7}"
    )
    for count in (int(n) for n in args.rules.split(",")):
        rng = random.Random(args.seed)
        phrases = make_phrases(rng, count)
        rules = make_rules(rng, phrases)
        corpora = {"en, fr": make_corpus(rng, args.posts, phrases), "6 langs": labelled_posts(args.posts)}
        for engine in args.engines.split(","):
            started = time.perf_counter()
            matcher = Matcher(rules, engine=engine)
            build = time.perf_counter() - started
            for name, posts in corpora.items():
                regex_rate, sample = regex_baseline(phrases, posts, args.regex_seconds)
                best, median, single, before, hits = time_matcher(matcher, posts, args.rounds, args.batch)
                print(
                    f"{count:>7,} {name:>7} {engine:>14} {build:>8.2f} {best:>13,.0f} {median:>9,.0f} "
                    f"{hits:>7,} {regex_rate:>11,.0f} {sample:>10,} {median / regex_rate:>6.0f}x "
                    f"{single:>11,.0f} {before:>9,.0f} {median / before:>6.2f}x",
                    flush=True,
                )
            del matcher
        del corpora
    worst_cases()


if __name__ == "__main__":
    main()
