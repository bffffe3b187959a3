"""SQL statements per filing in the worker's batch path, by statement text.

Every statement is a round trip on PostgreSQL, so their count is a figure that the
machine's load does not change. Runs the worker in-process on `bench_filing.py`'s
messages (one existing and one new contact each), after a warm-up batch, and prints the
statements per filing and the most frequent ones; on PostgreSQL also the round trips
(the statements, and the BEGIN and COMMIT psycopg sends around a transaction's).
`--profile` also prints a cProfile of the drain (cumulative time) and the CPU time per
filing.

    .venv/bin/python bench/count_statements.py --db postgresql
    .venv/bin/python bench/count_statements.py --db sqlite --profile
    .venv/bin/python bench/count_statements.py --db postgresql --single --messages 64
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, event

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_filing import bench_owner, queue, seed
from common import bench_database, scratch_dir
from crmdrop.store import apply as store_apply
from crmdrop.worker import process_one, worker_started

IDLE = psycopg.pq.TransactionStatus.IDLE


def _begins(dbapi: Any) -> bool:
    """Whether psycopg sends a BEGIN (a round trip of its own) before this statement."""
    return not dbapi.autocommit and dbapi.info.transaction_status == IDLE


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=256)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--single", action="store_true", help="one message queued at a time (low load)"
    )
    args = parser.parse_args()
    data = scratch_dir("crmdrop-count-")
    with bench_database(args.db, data) as url:
        settings, db, owner = bench_owner(url, data)
        seed(db, owner, args.contacts)
        worker_started(db)
        queue(db, owner, args.contacts, 64, "warm")
        while process_one(db, settings):
            pass
        # One at a time: each is queued (not counted) and filed before the next.
        singles = args.messages if args.single else 0
        if not singles:
            queue(db, owner, args.contacts, args.messages, "counted")
        counts: Counter[str] = Counter()
        trips: Counter[str] = Counter()  # the BEGINs and COMMITs psycopg sent
        queueing = [False]

        def count(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if not queueing[0]:
                counts[re.sub(r"\s+", " ", statement)[:160]] += 1
                if args.db == "postgresql" and _begins(cursor.connection):
                    trips["BEGIN"] += 1

        def commit(conn: Any) -> None:
            if not queueing[0] and args.db == "postgresql":
                dbapi = conn.connection.driver_connection
                if not dbapi.autocommit and dbapi.info.transaction_status != IDLE:
                    trips["COMMIT"] += 1

        def next_single() -> bool:
            nonlocal singles
            if not singles:
                return False
            singles -= 1
            queueing[0] = True
            queue(db, owner, args.contacts, 1, f"single-{singles}")
            queueing[0] = False
            return True

        event.listen(Engine, "before_cursor_execute", count)
        event.listen(Engine, "commit", commit)
        _count_copies(counts, queueing)
        profile = cProfile.Profile() if args.profile else None
        cpu = time.process_time()
        if profile:
            profile.enable()
        while process_one(db, settings) or next_single():
            pass
        if profile:
            profile.disable()
        cpu = time.process_time() - cpu
        event.remove(Engine, "before_cursor_execute", count)
        event.remove(Engine, "commit", commit)
        db.dispose()
    n = args.messages
    statements = sum(counts.values())
    print(f"{args.db}: {statements / n:.2f} statements per filing")
    if args.db == "postgresql":
        print(
            f"round trips per filing: {(statements + trips.total()) / n:.2f} (statements, "
            f"and {trips['BEGIN'] / n:.2f} BEGIN and {trips['COMMIT'] / n:.2f} COMMIT)"
        )
    for statement, times in counts.most_common(30):
        print(f"{times / n:6.2f}  {statement}")
    if profile:
        print(f"{cpu / n * 1000:.2f} ms CPU per filing (in-process, profiled)")
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


def _count_copies(counts: Counter[str], queueing: list[bool]) -> None:
    """The batch's COPYs (PostgreSQL, `store.copyrows`) go to psycopg directly, past
    SQLAlchemy's events: count each as one statement too."""
    copy_rows = getattr(store_apply, "copy_rows", None)
    if copy_rows is None:  # a tree from before session 6
        return

    def counted(session: Any, table: Any, rows: Any) -> bool:
        done = bool(copy_rows(session, table, rows))
        if done and not queueing[0]:
            counts[f"COPY {table.name} FROM STDIN (FORMAT BINARY)"] += 1
        return done

    store_apply.copy_rows = counted  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
