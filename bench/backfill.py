"""Peak memory of `run_bot.py backfill` as the file grows: flat when the file is read in bounded batches.

    .venv/bin/python bench/backfill.py [--sizes 100000 1000000] [--batch-size 2000] [--whole]

Generates each feed from the demo's 28 posts (config/replay/cage-match-2023.jsonl) with varied ids, times and
authors (no network), then runs `run_bot.py backfill` on it in a child process, rules alone (no model) and no
channel, and prints the child's peak RSS (getrusage via wait4), time and posts/s. The first size is the
anchor: each row shows its RSS against it, measured in the same run. `--whole` adds, for each size, a run with
the whole file as one batch: one poll and one transaction, as every replay was read before streaming.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.timeutil import iso, parse_datetime  # noqa: E402
from config import DEFAULT_RULES  # noqa: E402

DEMO = ROOT / "config" / "replay" / "cage-match-2023.jsonl"


def write_feed(path: Path, count: int) -> None:
    """`count` posts cycling through the demo's, each cycle a minute later with its own ids and authors
    (times stay in 2023, so none is quarantined as from the future)."""
    demo = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            cycle, record = divmod(i, len(demo))
            post = dict(demo[record])
            post["id"] = f"{cycle}{post['id']}"
            post["author"] = f"{post['author']}_{cycle % 997}"
            moment = parse_datetime(post["created_at"]) + timedelta(minutes=cycle)
            post["created_at"] = iso(moment)
            for link in ("reply_to", "quote_of"):
                if post.get(link):
                    post[link] = f"{cycle}{post[link]}"
            handle.write(json.dumps(post, ensure_ascii=False) + "\n")


def settings(directory: Path) -> Path:
    path = directory / "bench.toml"
    path.write_text(
        f'[storage]\npath = "{directory / "bench.db"}"\n\n[matcher]\nrules = "{DEFAULT_RULES}"\n\n'
        f'[detector]\nmodel = "off"\n\n[[sources]]\nname = "demo"\ntype = "replay"\npath = "{DEMO}"\n',
        encoding="utf-8",
    )
    return path


def backfill(directory: Path, feed: Path, batch: int) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one backfill of `feed` into a fresh database."""
    for name in ("bench.db", "bench.db-wal", "bench.db-shm"):
        (directory / name).unlink(missing_ok=True)
    command = [sys.executable, str(ROOT / "run_bot.py"), "--config", str(settings(directory))]
    command += ["--log-level", "WARNING", "backfill", str(feed), "--batch-size", str(batch)]
    log = directory / "backfill.log"  # a file, not a pipe: an unread pipe would stall the child
    started = time.perf_counter()
    with log.open("wb") as stderr:
        child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"backfill failed:\n{log.read_text(errors='replace')[-2000:]}")
    return usage.ru_maxrss / 1024, seconds  # Linux reports KB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--whole", action="store_true", help="also each file as one batch (as before)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        anchor = None
        print(f"{'posts':>9} {'batch':>9} {'peak RSS':>10} {'vs anchor':>9} {'seconds':>8} {'posts/s':>8}")
        for size in args.sizes:
            feed = directory / f"feed-{size}.jsonl"
            write_feed(feed, size)
            batches = [args.batch_size] + ([size] if args.whole else [])
            for batch in batches:
                rss, seconds = backfill(directory, feed, batch)
                anchor = anchor or rss
                print(
                    f"{size:>9,} {batch:>9,} {rss:>8.0f}MB {rss / anchor:>8.2f}x {seconds:>8.1f} "
                    f"{size / seconds:>8,.0f}",
                    flush=True,
                )
            feed.unlink()


if __name__ == "__main__":
    main()
