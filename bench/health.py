"""/healthz under load on a large database: do polls go on, and how soon does the service stop?

    .venv/bin/python bench/health.py [--runs 2000000] [--clients 16] [--seconds 20] [--code DIR]

Builds (once, then reuses) a database holding `runs` poll records through the real schema, starts the real
service (`run_bot.py run`, the demo replay polled every second, /healthz on a free port), lets `clients`
threads ask /healthz back to back for `seconds`, then sends SIGTERM. Prints the polls the service made
meanwhile (counted in the database afterwards), the /healthz answers and their latency, and the time from
SIGTERM to exit. `--code DIR` runs the service from another checkout (to compare with an older version).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.timeutil import iso, utcnow
from config import DEFAULT_RULES
from storage import Store

ROOT = Path(__file__).resolve().parent.parent
FEED = ROOT / "config" / "replay" / "cage-match-2023.jsonl"


def build(path: Path, runs: int) -> None:
    """A database with `runs` poll records over 200 feeds and a year, 2 % of them failed."""
    rng = random.Random(7)
    store = Store.open(path)
    now = utcnow()
    started = time.perf_counter()
    with store.db.atomic():
        store.db.conn.executemany(
            "INSERT INTO runs (source, feed, started_at, finished_at, fetched, new, hits, error, platform) "
            "VALUES ('x', ?, ?, ?, ?, ?, 0, ?, 'x')",
            (
                (
                    f"account{rng.randrange(200):03d}",
                    iso(moment),
                    iso(moment),
                    rng.randint(0, 20),
                    rng.randint(0, 5),
                    None if rng.random() > 0.02 else "X server error (503)",
                )
                for moment in (now - timedelta(seconds=rng.randrange(365 * 86400)) for _ in range(runs))
            ),
        )
    store.close()
    print(f"built {runs:,} poll records in {time.perf_counter() - started:.0f}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_file(directory: Path, database: Path, port: int) -> Path:
    path = directory / "bench.toml"
    path.write_text(
        f'[storage]\npath = "{database}"\n[matcher]\nrules = "{DEFAULT_RULES}"\n[detector]\nmodel = "off"\n'
        f'[schedule]\njitter = "0s"\n[service]\nhttp_port = {port}\n'
        f'[[sources]]\nname = "demo"\ntype = "replay"\npath = "{FEED}"\nevery = "1s"\n'
    )
    return path


def ask(url: str, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    """Ask `url` back to back until `stop`; record each answer's latency, or why there was none."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with opener.open(url, timeout=30) as answer:
                answer.read()
            latencies.append(time.perf_counter() - started)
        except urllib.error.HTTPError as error:  # 503: an answer all the same
            error.read()
            latencies.append(time.perf_counter() - started)
        except OSError as error:
            failures.append(type(error).__name__)


def polls_since(database: Path, first_id: int) -> int:
    with sqlite3.connect(database) as conn:
        return conn.execute(
            "SELECT count(*) FROM runs WHERE source = 'demo' AND id > ?", [first_id]
        ).fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2_000_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--db", type=Path, default=Path(tempfile.gettempdir()) / "ringside-bench-health.db")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose run_bot.py runs")
    args = parser.parse_args()
    if not args.db.exists():
        build(args.db, args.runs)
    work = Path(tempfile.mkdtemp(prefix="ringside-bench-health-"))
    database = work / "ringside.db"
    shutil.copy(args.db, database)
    with sqlite3.connect(database) as conn:
        (first_id,) = conn.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()
    port = free_port()
    service = subprocess.Popen(
        [
            sys.executable,
            str(args.code / "run_bot.py"),
            "--config",
            str(settings_file(work, database, port)),
            "run",
        ],
        cwd=args.code,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(args.code)},
    )
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        while polls_since(database, first_id) == 0:  # started and polled once
            time.sleep(0.2)
        before = polls_since(database, first_id)
        stop, latencies, failures = threading.Event(), [], []
        clients = [
            threading.Thread(target=ask, args=[url, stop, latencies, failures], daemon=True)
            for _ in range(args.clients)
        ]
        for client in clients:
            client.start()
        time.sleep(args.seconds)
        polls = polls_since(database, first_id) - before
        stop.set()
        stopping = time.perf_counter()
        service.send_signal(signal.SIGTERM)
        code = service.wait(timeout=300)
        exit_seconds = time.perf_counter() - stopping
    finally:
        if service.poll() is None:
            service.kill()
        shutil.rmtree(work, ignore_errors=True)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    print(f"code: {args.code}; {args.clients} clients asking /healthz for {args.seconds:.0f}s")
    print(f"polls made meanwhile: {polls} (the demo feed is polled every second)")
    print(
        f"/healthz answers: {len(latencies):,} ({len(latencies) / args.seconds:,.0f}/s), "
        f"median {quantiles[49] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms; "
        f"no answer: {len(failures)} {sorted(set(failures))}"
    )
    print(f"SIGTERM to exit: {exit_seconds:.1f}s (exit code {code})")


if __name__ == "__main__":
    main()
