"""The worker's own CPU per filing, in-process: full batches and batches of one.

`bench_filing.py` times `crmdrop worker` processes; this runs the same batch path
(`worker.process_one`) inside the bench process on the same messages, so that its CPU
(`time.process_time`: this process only, not PostgreSQL's) can be read per filing, compared
between branches and profiled. `--single` queues one message at a time and files it before
queueing the next: what a worker pays per batch at low load. `--parse-process`: the next
batch parsed meanwhile by a second process, as the SQLite worker does
(`worker.ParseAhead`); its CPU is printed apart. `--profile FILE` writes a
cProfile (CPU-time clock) of the timed drains, for `pstats` or `snakeviz`.

    .venv/bin/python bench/profile_worker.py --db postgresql
    .venv/bin/python bench/profile_worker.py --db sqlite --single --profile /tmp/one.prof
"""

from __future__ import annotations

import argparse
import cProfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_filing import bench_owner, queue, seed
from common import bench_database, cpu_seconds, median, scratch_dir
from crmdrop.config import Settings
from crmdrop.store.db import Database
from crmdrop.worker import ParseAhead, Progress, file_next, worker_started


def _drain(
    db: Database, settings: Settings, profile: cProfile.Profile | None, ahead: ParseAhead | None
) -> tuple[float, float, float]:
    """As the worker's filing thread does: claim again while the last claim left more.
    The CPU time it took here (profiled, if asked), in the parse process, and the
    elapsed time."""
    cpu, child, wall = time.process_time(), _child_cpu(ahead), time.perf_counter()
    if profile:
        profile.enable()
    while file_next(db, settings, None, ahead) is Progress.MORE:
        pass
    if profile:
        profile.disable()
    return time.process_time() - cpu, _child_cpu(ahead) - child, time.perf_counter() - wall


def _child_cpu(ahead: ParseAhead | None) -> float:
    pid = ahead.process.pid if ahead else None
    return cpu_seconds(pid) if pid else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", action="store_true", help="batches of one")
    parser.add_argument("--profile", help="write a cProfile of the timed drains here")
    parser.add_argument(
        "--parse-process", action="store_true", help="the next batch parsed meanwhile (SQLite)"
    )
    args = parser.parse_args()
    ahead = ParseAhead() if args.parse_process else None
    data = scratch_dir("crmdrop-profile-")
    profile = cProfile.Profile(time.process_time) if args.profile else None
    per_filing: list[float] = []
    with bench_database(args.db, data) as url:
        settings, db, owner = bench_owner(url, data)
        seed(db, owner, args.contacts)
        worker_started(db)
        queue(db, owner, args.contacts, 64, "warm")
        while file_next(db, settings) is not Progress.IDLE:
            pass
        for r in range(args.rounds):
            totals = [0.0, 0.0, 0.0]  # CPU here, CPU in the parse process, elapsed
            batches = [(n, 1) for n in range(args.messages)] if args.single else [(0, 0)]
            for n, count in batches:
                queue(db, owner, args.contacts, count or args.messages, f"r{r}n{n}")
                spent = _drain(db, settings, profile, ahead)
                totals = [a + b for a, b in zip(totals, spent, strict=True)]
            per_filing.append(totals[0] / args.messages * 1000)
            print(
                f"round {r + 1}: {per_filing[-1]:.3f} ms of worker CPU per filing, "
                f"{totals[1] / args.messages * 1000:.3f} in the parse process; "
                f"{args.messages / totals[2]:.0f} filings/s",
                flush=True,
            )
        if ahead:
            ahead.close(db)
        db.dispose()
    kind = "batches of one" if args.single else "full batches"
    print(f"{args.db}, {kind}: {median(per_filing):.3f} ms of worker CPU per filing (median)")
    if profile and args.profile:
        profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()
