"""Rule previews benchmark: `rules try` and `rules diff` over a database of stored posts, posts/s.

    .venv/bin/python bench/previews.py [--posts 100000] [--seed 5] [--keep DIR]

Fills a new database with bench/pipeline.py's realistic feed (about 2 % challenges) judged by the shipped
rules and stored by Store.save_poll, as the service stores them (hits included). Then prints, pinned to one
core where the OS allows, the posts per second of:
- reading the posts back in batches alone (Store.post_batches), current texts, and every version;
- `rules try QUERY` and `rules diff` as a user runs them: a subprocess of run_bot.py, output to a file,
  Python's start-up included. The diff compares the shipped rules with a copy missing one rule and with a
  broad rule added, so it has hits gained and lost to report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.pipeline import realistic_feed
from bot.detect.detector import Detector
from bot.detect.matcher import Matcher, load_rules
from bot.models import Fetch
from bot.timeutil import utcnow
from config import DEFAULT_RULES
from storage import Store

ROOT = Path(__file__).resolve().parent.parent
DEMO_FEED = ROOT / "config" / "replay" / "cage-match-2023.jsonl"
QUERY = '"cage match" OR octagon OR (fight* NEAR/3 (me OR you))'


def fill(database: Path, count: int, seed: int) -> int:
    """Store `count` posts judged by the shipped rules; the number of hits stored."""
    detector = Detector(Matcher(load_rules(DEFAULT_RULES)))
    posts = realistic_feed(count, seed)
    with Store.open(database) as store:
        for number, start in enumerate(range(0, len(posts), 2000)):
            batch = tuple(posts[start : start + 2000])
            hits = [(j.post, hit, None) for j in detector.judge(batch) for hit in j.hits]
            store.save_poll("bench", "all", utcnow(), Fetch(batch, str(number), len(batch)), hits, [])
        return store.counts()["hits"]


def read_back(database: Path, every_version: bool) -> tuple[int, float]:
    with Store.open(database, create=False, readonly=True) as store:
        began = time.perf_counter()
        read = sum(len(batch) for batch in store.post_batches(every_version=every_version))
        return read, time.perf_counter() - began


def edited_rules(folder: Path) -> Path:
    """The shipped rules with `dare` removed and a broad `fighting-words` rule (fight*) added."""
    target = folder / "rules"
    shutil.copytree(DEFAULT_RULES, target)
    challenges = target / "challenges.toml"
    text = challenges.read_text(encoding="utf-8")
    start = text.index('[[rules]]\nid = "dare"')
    end = text.index("[[rules]]", start + 1)
    challenges.write_text(text[:start] + text[end:], encoding="utf-8")
    (target / "broad.toml").write_text(
        '[[rules]]\nid = "fighting-words"\ncategory = "taunt"\nquery = "fight*"\n', encoding="utf-8"
    )
    return target


def command_seconds(config: Path, *args: str) -> tuple[float, str]:
    """Wall time of one run_bot.py command and its summary line (the last one, or the totals of a diff)."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    with tempfile.TemporaryFile("w+") as out:
        began = time.perf_counter()
        subprocess.run(
            [*pin, sys.executable, str(ROOT / "run_bot.py"), "--config", str(config), *args],
            stdout=out,
            check=True,
            cwd=ROOT,
        )
        elapsed = time.perf_counter() - began
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.strip()]
    summary = [line for line in lines if line.startswith("total:")] or lines[-1:]  # diff: its totals
    return elapsed, summary[0] if summary else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the database in this directory and keep it")
    options = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    folder = options.keep or Path(tempfile.mkdtemp(prefix="ringside-previews-"))
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "bench.db"
    if database.exists():
        database.unlink()
    began = time.perf_counter()
    hits = fill(database, options.posts, options.seed)
    print(
        f"python {sys.version.split()[0]}, {options.posts:,} posts stored with {hits:,} hits in "
        f"{time.perf_counter() - began:.0f} s ({database.stat().st_size / 1e6:.0f} MB)"
    )
    config = folder / "ringside.toml"
    config.write_text(
        f'[storage]\npath = "{database}"\n[detector]\nmodel = "off"\n'
        f'[[sources]]\nname = "demo"\ntype = "replay"\npath = "{DEMO_FEED}"\n',  # settings need a source
        encoding="utf-8",
    )
    for every in (False, True):
        read, seconds = read_back(database, every)
        label = "every version" if every else "current texts"
        print(f"  read back ({label}): {read:,} posts in {seconds:.2f} s, {read / seconds:,.0f} posts/s")
    rows = [("rules try", ("rules", "try", QUERY, "--limit", "20"))]
    rows.append(("rules diff", ("rules", "diff", str(edited_rules(folder)))))
    for name, args in rows:
        seconds, last = command_seconds(config, *args)
        print(f"  {name}: {seconds:.2f} s, {options.posts / seconds:,.0f} posts/s (start-up included)")
        print(f"    {last}")
    if options.keep is None:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
