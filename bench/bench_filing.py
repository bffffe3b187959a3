"""Deliveries filed per second by `crmdrop worker` processes, SQLite or PostgreSQL.

Seeds N contacts (with their addresses) in a fresh database, then for each round and
each worker count asked for (interleaved: 1, 2, 1, 2, ...): queues M deliveries of
5 KB messages from the owner to one existing and one new contact in one transaction,
and times that many `crmdrop worker` processes draining them (parse, decide, apply,
finish), from the queueing commit to the last delivery finished.

    .venv/bin/python bench/bench_filing.py --db sqlite --contacts 1000000
    .venv/bin/python bench/bench_filing.py --db postgresql --contacts 100000 --workers 1,2
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    bench_database,
    cpu_seconds,
    crmdrop_env,
    machine_load,
    median,
    message,
    postgres_cpu_seconds,
    stop,
)
from crmdrop.config import load_settings
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.inbound import NewDelivery, add_delivery
from crmdrop.store.models import Contact, ContactEmail, Delivery


def seed_contacts(db: Database, account_id: int, count: int) -> None:
    now = datetime.now(UTC)
    batch = 10_000
    for start in range(0, count, batch):
        n = min(batch, count - start)
        with db.writing() as session:
            session.execute(
                insert(Contact),
                [
                    {
                        "id": start + i + 1,
                        "account_id": account_id,
                        "name": f"Contact {start + i}",
                        "created_at": now,
                        "last_activity_at": now,
                    }
                    for i in range(n)
                ],
            )
            session.execute(
                insert(ContactEmail),
                [
                    {
                        "account_id": account_id,
                        "contact_id": start + i + 1,
                        "email": f"contact{start + i}@customer{(start + i) % 5000}.example",
                    }
                    for i in range(n)
                ],
            )


def _sequences_past_seeded(db: Database) -> None:
    """PostgreSQL: the seeded rows had explicit ids; move the id sequence past them, and
    gather the planner's statistics, as autovacuum does within a minute of a bulk load
    (without them PostgreSQL guesses that an account has a few dozen addresses and scans
    all 100,000 of them for each batch: 25 ms a query instead of 0.3 ms)."""
    if not db.is_sqlite:
        with db.writing() as session:
            session.execute(
                text(
                    "SELECT setval(pg_get_serial_sequence('contacts', 'id'), max(id)) FROM contacts"
                )
            )
        with db.write_engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))


def queue(db: Database, owner: tuple[int, int, str], contacts: int, count: int, tag: str) -> None:
    """`count` deliveries in one transaction: the workers see them all at once."""
    account_id, user_id, email = owner
    rng = random.Random(tag)
    now = datetime.now(UTC)
    with db.write_connection() as conn:
        for n in range(count):
            known = rng.randrange(contacts)
            to = f"contact{known}@customer{known % 5000}.example, new{tag}x{n}@p{n}.example"
            new = NewDelivery(
                account_id, user_id, "note", "dropbox@bench", email, "smtp", "", None, "b", email
            )
            add_delivery(conn, new, message(email, to, n=n), now=now)


def pending(db: Database) -> int:
    with db.reading() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.status == "queued")
            )
            or 0
        )


def timed_drain(
    db: Database,
    env: dict[str, str],
    owner: tuple[int, int, str],
    args: argparse.Namespace,
    workers: int,
    tag: str,
) -> float:
    procs = [
        subprocess.Popen([sys.executable, "-m", "crmdrop", "worker"], env=env)
        for _ in range(workers)
    ]
    try:
        queue(db, owner, args.contacts, workers * 4, f"warm{tag}")  # workers up and warm
        while pending(db):
            time.sleep(0.05)
        queue(db, owner, args.contacts, args.messages, tag)
        # From the queueing commit (the workers are woken by it), not before the queueing:
        # the bench's own inserts of the 2,000 messages are not the workers' time.
        cpu, server = sum(cpu_seconds(p.pid) for p in procs), postgres_cpu_seconds()
        start = time.perf_counter()
        while pending(db):
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu
        server = postgres_cpu_seconds() - server
    finally:
        for proc in procs:
            stop(proc)
    print(
        f"  {workers} worker(s): {cpu / args.messages * 1000:.2f} ms of worker CPU per filing "
        f"(= {args.messages / cpu:.0f} filings/s per busy core)"
        + ("" if db.is_sqlite else f"; PostgreSQL server: {server / args.messages * 1000:.2f} ms"),
        flush=True,
    )
    return args.messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--workers", default="1", help="worker counts to compare, e.g. 1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    data = Path(tempfile.mkdtemp(prefix="crmdrop-filing-"))
    print(machine_load())
    with bench_database(args.db, data) as url:
        settings = load_settings(data_dir=data, domain="dropbox.bench", database_url=url)
        db = Database(settings.db_url)
        db.migrate()
        with db.writing() as session:
            user = accounts.add_user(session, "owner@mycorp.example", name="O", account="bench")
            owner = (user.account_id, user.id, user.email)
        t0 = time.perf_counter()
        seed_contacts(db, owner[0], args.contacts)
        _sequences_past_seeded(db)
        print(f"seeded {args.contacts} contacts in {time.perf_counter() - t0:.1f}s")
        env = crmdrop_env(data, url)
        rates: dict[int, list[float]] = {n: [] for n in counts}
        for r in range(args.rounds):
            for n in counts:
                rate = timed_drain(db, env, owner, args, n, f"r{r}w{n}")
                rates[n].append(rate)
                print(f"round {r + 1}, {n} worker(s): {rate:.0f} filings/s", flush=True)
        with db.reading() as session:
            statuses = dict(
                session.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                ).all()
            )
        db.dispose()
    for n in counts:
        print(
            f"{args.db}, {args.contacts} contacts, {n} worker(s): "
            f"{median(rates[n]):.0f} filings/s (median; rounds {[round(x) for x in rates[n]]})"
        )
    if len(counts) > 1:
        base = median(rates[counts[0]])
        for n in counts[1:]:
            print(f"{n} workers / {counts[0]}: {median(rates[n]) / base:.2f}x")
    print(f"statuses {statuses}; {machine_load()}")


if __name__ == "__main__":
    main()
