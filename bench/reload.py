"""Live reload: how long a reload takes, and how long it holds the polls, with the shipped rules and 10k.

    .venv/bin/python bench/reload.py [--rules 10000] [--reloads 5]

Runs the real service in this process (real scheduler, a paced replay polled every 0.2 s, a SQLite file in a
temporary directory) with a rules directory of generated rules (bench/match.py's shapes: phrases, ORs, NOTs,
NEARs, wildcards), then reloads it `reloads` times, adding one rule each time. Prints, per rule count, the
median and worst of: the whole reload (reading the settings, compiling the rules, swapping) and the part of
it that holds the polls (Service.adopt: waiting for the poll in flight, then the swap). Compiling happens
before the swap, so only the second figure is time the feeds wait.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from match import make_phrases

from bot.app import build_pipeline
from bot.reload import Reloader
from bot.service import Service
from config import DEFAULT_RULES, load_settings
from storage import Store


def rule_file(phrases: list[str], rng: random.Random) -> str:
    """TOML of one rule per phrase, in bench/match.py's shapes."""
    tables = []
    for index, phrase in enumerate(phrases):
        other, shape = rng.choice(phrases), index % 10
        query = {
            0: f'"{phrase}" OR "{other}"',
            1: f'"{phrase}" NOT "{other}"',
            2: f'"{phrase}" NEAR/4 "{other}"',
        }
        text = query.get(shape, f'"{phrase}"').replace("'", "")
        tables.append(f'[[rules]]\nid = "g{index}"\ncategory = "challenge"\nquery = \'{text}\'\n')
    return "\n".join(tables)


def write_setup(directory: Path, generated: int) -> Path:
    rules = directory / "rules"
    rules.mkdir()
    for file in DEFAULT_RULES.glob("*.toml"):
        (rules / file.name).write_text(file.read_text(encoding="utf-8"), encoding="utf-8")
    if generated:
        rng = random.Random(7)
        (rules / "generated.toml").write_text(rule_file(make_phrases(rng, generated), rng), encoding="utf-8")
    feed = directory / "feed.jsonl"
    feed.write_text(
        "".join(
            json.dumps(
                {
                    "platform": "x",
                    "id": str(i),
                    "author": f"a{i % 50}",
                    "text": f"post {i}: I'm up for a cage match" if i % 7 == 0 else f"post {i} about lunch",
                    "created_at": f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
                }
            )
            + "\n"
            for i in range(20_000)
        ),
        encoding="utf-8",
    )
    config = directory / "ringside.toml"
    config.write_text(
        f'[storage]\npath = "{directory / "r.db"}"\n[matcher]\nrules = "{rules}"\n[detector]\nmodel = "off"\n'
        '[schedule]\ndeliver_every = "1s"\njitter = "0s"\n'
        f'[[sources]]\nname = "demo"\ntype = "replay"\npath = "{feed}"\n'
        'replay_seconds = 600\nevery = "0.2s"\n',
        encoding="utf-8",
    )
    return config


def measure(generated: int, reloads: int) -> tuple[list[float], list[float], int]:
    with tempfile.TemporaryDirectory() as temp:
        config = write_setup(Path(temp), generated)
        settings = load_settings(config, environ={})
        store = Store.open(settings.database)
        service = Service(settings, build_pipeline(settings, store))
        held: list[float] = []
        adopt = service.adopt

        def timed_adopt(*args, **kwargs):  # the bench's own stopwatch around the swap
            started = time.perf_counter()
            try:
                return adopt(*args, **kwargs)
            finally:
                held.append(time.perf_counter() - started)

        service.adopt = timed_adopt  # type: ignore[method-assign]
        reloader = Reloader(service, dict)
        stop = threading.Event()
        runner = threading.Thread(target=service.run_until, args=[stop])
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            runner.start()
            service.started.wait(30)
            time.sleep(1.0)  # polls under way
            whole = []
            for index in range(reloads):
                extra = (
                    f'[[rules]]\nid = "added{index}"\ncategory = "challenge"\nquery = \'"added {index}"\'\n'
                )
                (Path(temp) / "rules" / f"added{index}.toml").write_text(extra, encoding="utf-8")
                started = time.perf_counter()
                assert reloader.reload("bench")
                whole.append(time.perf_counter() - started)
            stop.set()
            runner.join(30)
        count = len(service.pipeline.detector.matcher.rules) - reloads  # as it started
        store.close()
    return whole, held, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000, help="generated rules beside the shipped ones")
    parser.add_argument("--reloads", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the service's own lines would bury the figures
    print(f"{'rules':>7} {'reload median':>14} {'worst':>8} {'polls held median':>18} {'worst':>8}")
    for generated in (0, args.rules):
        whole, held, count = measure(generated, args.reloads)
        print(
            f"{count:>7} {statistics.median(whole) * 1000:>12.0f}ms {max(whole) * 1000:>6.0f}ms "
            f"{statistics.median(held) * 1000:>16.1f}ms {max(held) * 1000:>6.1f}ms"
        )


if __name__ == "__main__":
    main()
