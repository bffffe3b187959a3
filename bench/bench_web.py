"""Server time of the CRM's heaviest reads at volume (issue #8's budget: < 100 ms each).

Builds one account with 100,000 contacts and 1,000,000 notes by bulk insert (one of the
contacts has 2,000 notes), then times, in this process, what a page request does
between routing and the response: the store function in a read transaction and, when
`--pages` is given and the web app is importable, the whole HTTP request through the
ASGI app (store + template), both as medians of repeated runs.

    .venv/bin/python bench/bench_web.py [--contacts 100000] [--notes 1000000] [--pg URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from crmdrop.store import accounts
from crmdrop.store.contacts import get_contact, list_contacts
from crmdrop.store.db import Database
from crmdrop.store.models import (
    Company,
    Contact,
    ContactEmail,
    Delivery,
    Note,
    contact_terms,
    note_contacts,
    table_of,
)
from crmdrop.store.search import terms_of

BATCH = 20_000
HEAVY_NOTES = 2_000


def _batches(total: int) -> range:
    return range(0, total, BATCH)


def _delivery(db: Database, start: datetime) -> tuple[int, int, int]:
    with db.writing() as session:
        user = accounts.add_user(session, "owner@mycorp.example", name="Owner", account="big")
        delivery = Delivery(
            account_id=user.account_id,
            user_id=user.id,
            dropbox_kind="note",
            rcpt_to="x",
            mail_from="",
            protocol="smtp",
            raw=b"Subject: x\r\n\r\nx",
            size=10,
            subject="x",
            status="filed",
            next_attempt_at=start,
            received_at=start,
        )
        session.add(delivery)
        session.flush()
        return user.account_id, user.id, delivery.id


def _people(db: Database, account_id: int, contacts: int, start: datetime) -> None:
    """Contacts in 997 companies, with one address each, and their search terms."""
    with db.writing() as session:
        session.execute(
            insert(table_of(Company)),
            [
                {
                    "id": k + 1,
                    "account_id": account_id,
                    "name": f"Client {k} Ltd",
                    "domain": f"client{k}.example",
                    "created_at": start,
                }
                for k in range(997)
            ],
        )
        for base in _batches(contacts):
            ids = range(base, min(base + BATCH, contacts))
            session.execute(
                insert(table_of(Contact)),
                [
                    {
                        "id": i + 1,
                        "account_id": account_id,
                        "name": f"Person {i}",
                        "company_id": i % 997 + 1,
                        "created_at": start,
                        "last_activity_at": start + timedelta(minutes=i),
                    }
                    for i in ids
                ],
            )
            emails = {i: f"person{i}@client{i % 997}.example" for i in ids}
            session.execute(
                insert(table_of(ContactEmail)),
                [
                    {"account_id": account_id, "contact_id": i + 1, "email": e}
                    for i, e in emails.items()
                ],
            )
            session.execute(
                insert(contact_terms),
                [
                    {"account_id": account_id, "term": t, "contact_id": i + 1}
                    for i, e in emails.items()
                    for t in terms_of(f"Person {i}", [e])
                ],
            )


def _notes(
    db: Database, ids: tuple[int, int, int], contacts: int, notes: int, start: datetime
) -> int:
    """`notes` notes, the first HEAVY_NOTES all under one contact; that contact's id."""
    account_id, user_id, delivery_id = ids
    heavy = contacts // 2
    with db.writing() as session:
        for base in _batches(notes):
            rng = range(base, min(base + BATCH, notes))
            session.execute(
                insert(table_of(Note)),
                [
                    {
                        "id": i + 1,
                        "account_id": account_id,
                        "user_id": user_id,
                        "delivery_id": delivery_id,
                        "message_key": f"<m{i}@bench>",
                        "message_id": f"<m{i}@bench>",
                        "subject": f"Note {i}",
                        "body": "Hello,\nthe offer is attached.\n",
                        "own_text": "",
                        "author_name": "Owner",
                        "author_email": "owner@mycorp.example",
                        "sent_at": start + timedelta(seconds=i),
                        "direction": "from_user",
                        "is_forward": False,
                        "created_at": start + timedelta(seconds=i),
                    }
                    for i in rng
                ],
            )
            session.execute(
                insert(note_contacts),
                [
                    {"note_id": i + 1, "contact_id": heavy if i < HEAVY_NOTES else i % contacts + 1}
                    for i in rng
                ],
            )
    return heavy


def seed(db: Database, contacts: int, notes: int) -> tuple[int, int]:
    """The account id and the id of the contact with 2,000 notes."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    ids = _delivery(db, start)
    _people(db, ids[0], contacts, start)
    return ids[0], _notes(db, ids, contacts, notes, start)


def median_ms(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of `fn` (CPU: this process's own time, which a
    busy machine does not inflate as it does the wall clock)."""
    fn()  # warm: statement caches, the OS page cache
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def store_figures(
    db: Database, account_id: int, heavy: int, runs: int
) -> dict[str, tuple[float, float]]:
    def read(fn: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with db.reading() as session:
                return fn(session)

        return run

    return {
        "contacts list (first page)": median_ms(read(lambda s: list_contacts(s, account_id)), runs),
        "contacts list (page 2, cursor)": median_ms(
            read(
                lambda s: list_contacts(
                    s, account_id, after=list_contacts(s, account_id).next_cursor
                )
            ),
            runs,
        ),
        "search 'person4242'": median_ms(
            read(lambda s: list_contacts(s, account_id, search="person4242")), runs
        ),
        "search 'client7.example' (100 hits)": median_ms(
            read(lambda s: list_contacts(s, account_id, search="client7.example")), runs
        ),
        "search 'person' (every contact)": median_ms(
            read(lambda s: list_contacts(s, account_id, search="person")), runs
        ),
        "search 'client 7 ltd' (a company's name)": median_ms(
            read(lambda s: list_contacts(s, account_id, search="client 7 ltd")), runs
        ),
        f"contact page, {HEAVY_NOTES} notes (first 50)": median_ms(
            read(lambda s: get_contact(s, account_id, heavy)), runs
        ),
    }


def page_figures(
    db: Database, heavy: int, runs: int, data_dir: Path
) -> dict[str, tuple[float, float]]:
    """The same reads as whole HTTP requests through the ASGI app (routing, session,
    store call, template), in this process: a page's server time."""
    import re

    from fastapi.testclient import TestClient

    from crmdrop.config import load_settings
    from crmdrop.passwords import hash_password
    from crmdrop.store.models import User
    from crmdrop.web.app import create_app

    with db.writing() as session:
        user = session.get(User, 1)
        assert user is not None
        user.password_hash = hash_password("bench")
        email = user.email
    settings = load_settings(data_dir=data_dir, domain="dropbox.test", database_url=db.url)
    client = TestClient(create_app(db, settings))
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").text)
    assert token is not None
    client.post("/login", data={"email": email, "password": "bench", "csrf_token": token[1]})

    def get(path: str) -> Callable[[], Any]:
        def run() -> Any:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)

        return run

    return {
        "GET /contacts": median_ms(get("/contacts"), runs),
        "GET /contacts?q=person4242": median_ms(get("/contacts?q=person4242"), runs),
        f"GET /contacts/<id> ({HEAVY_NOTES} notes)": median_ms(get(f"/contacts/{heavy}"), runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--notes", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pg", help="a PostgreSQL URL of an empty database (default: SQLite)")
    parser.add_argument("--keep", help="a SQLite file to seed once and reuse")
    parser.add_argument("--pages", action="store_true", help="also time whole page requests")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "bench.db"
        reuse = path.exists() and not args.pg
        db = Database(args.pg or f"sqlite:///{path}")
        db.migrate()
        t = time.perf_counter()
        account_id, heavy = (
            (1, args.contacts // 2) if reuse else seed(db, args.contacts, args.notes)
        )
        took = time.perf_counter() - t
        print(f"seeded {args.contacts:,} contacts, {args.notes:,} notes in {took:.0f} s")
        if not db.is_sqlite:
            with db.write_engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        print(f"{'median of ' + str(args.runs):<45} {'wall':>8}    {'cpu':>8}")
        for name, (wall, cpu) in store_figures(db, account_id, heavy, args.runs).items():
            print(f"{name:<45} {wall:8.1f} ms {cpu:8.1f} ms")
        if args.pages:
            for name, (wall, cpu) in page_figures(db, heavy, args.runs, Path(tmp)).items():
                print(f"{name:<45} {wall:8.1f} ms {cpu:8.1f} ms")
        db.dispose()


if __name__ == "__main__":
    main()
