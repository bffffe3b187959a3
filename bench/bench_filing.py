"""Deliveries filed per second on SQLite with 100,000 existing contacts.

Queues N deliveries (5 KB messages from the owner to two contacts: one existing,
one new) straight into the inbound queue, then times the worker draining it in
this process — parse, decide, apply, commit, one delivery per transaction.

    .venv/bin/python bench/bench_filing.py [--contacts 100000] [--messages 2000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import message
from crmdrop.config import load_settings
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.inbound import NewDelivery, add_delivery
from crmdrop.store.models import Contact, ContactEmail, Delivery
from crmdrop.worker import process_one


def seed_contacts(db: Database, account_id: int, count: int) -> None:
    now = datetime.now(UTC)
    batch = 10_000
    with db.writing() as session:
        for start in range(0, count, batch):
            n = min(batch, count - start)
            session.execute(
                insert(Contact),
                [
                    {
                        "id": start + i + 1,
                        "account_id": account_id,
                        "name": f"Contact {start + i}",
                        "created_at": now,
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="crmdrop-filing-"))
    settings = load_settings(data_dir=data, domain="dropbox.bench")
    db = Database(settings.db_url)
    db.migrate()
    with db.writing() as session:
        user = accounts.add_user(session, "owner@mycorp.example", name="O", account="bench")
        account_id, user_id, email = user.account_id, user.id, user.email
    t0 = time.perf_counter()
    seed_contacts(db, account_id, args.contacts)
    print(f"seeded {args.contacts} contacts in {time.perf_counter() - t0:.1f}s")
    rng = random.Random(1)
    now = datetime.now(UTC)
    with db.write_connection() as conn:
        for n in range(args.messages):
            known = rng.randrange(args.contacts)
            to = f"contact{known}@customer{known % 5000}.example, new{n}@prospect{n}.example"
            new = NewDelivery(
                account_id,
                user_id,
                "note",
                "dropbox@bench",
                email,
                "smtp",
                "",
                None,
                f"bench {n}",
                email,
            )
            add_delivery(conn, new, message(email, to, n=n), now=now)
    start = time.perf_counter()
    while process_one(db, settings):
        pass
    elapsed = time.perf_counter() - start
    with db.reading() as session:
        statuses = dict(
            session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all()
        )
    filed = sum(n for status, n in statuses.items() if status != "queued")
    print(
        f"filed {filed} deliveries in {elapsed:.1f}s: {filed / elapsed:.0f} filings/s "
        f"(target >= 200); statuses {statuses}"
    )


if __name__ == "__main__":
    main()
