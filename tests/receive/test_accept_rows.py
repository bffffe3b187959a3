"""The accept path inserts its rows on the DB-API cursor (`DriverInsert`; sqlite3 or
psycopg): what it stores must be exactly what the Core statement stores — the same
values (on SQLite with the same storage classes: text dates in SQLAlchemy's format),
NULs scrubbed, strings cut to their column — or the worker would read back something
else."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from crmdrop.config import Settings, load_settings
from crmdrop.spool import Spool
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.inbound import NewDelivery, add_delivery, store_raw
from crmdrop.store.models import Delivery


def _rows(path: Path, table: str, *, skip: set[str]) -> list[dict[str, tuple[object, str]]]:
    """Every column but `skip`, as SQLite holds it: (value, storage class), in rowid order."""
    conn = sqlite3.connect(path)
    try:
        names = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] not in skip]
        columns = ", ".join(f"{n}, typeof({n})" for n in names)
        found = conn.execute(f"SELECT {columns} FROM {table} ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return [{n: (row[2 * i], row[2 * i + 1]) for i, n in enumerate(names)} for row in found]


# Not UTC, with microseconds: the stored instant must be converted the same way.
NOW = datetime(2026, 11, 30, 9, 1, 2, 345678, tzinfo=timezone(timedelta(hours=2)))


def _insert_both_ways(db: Database) -> int:
    """Migrate `db`, then store one accepted and one refused delivery with the Core
    statements (a Session takes them) and the same again on the cursor (a Connection
    takes it); the id of the accepted delivery the cursor stored."""
    db.migrate()
    with db.writing() as session:
        user = accounts.add_user(session, "u@mycorp.example", name="U", account="acme")
        account_id, user_id = user.account_id, user.id
    new = NewDelivery(
        account_id=account_id,
        user_id=user_id,
        dropbox_kind="note",
        rcpt_to="dropbox-x@dropbox.test",
        mail_from="a\x00b@sender.example",  # a NUL: scrubbed
        protocol="smtp",
        peer="127.0.0.1",
        message_id=None,
        subject="s" * 3000,  # cut to 2,000 by add_delivery
        author="x" * 400 + "@sender.example",  # cut to the column's 320
    )
    with db.writing() as session:
        digest = store_raw(session, Spool.of(b"core bytes"), now=NOW)
        add_delivery(session, new, Spool.of(b"core bytes"), now=NOW, stored=digest)
        add_delivery(session, new, None, now=NOW, reason="rejected: no")
    with db.write_connection() as conn:
        digest = store_raw(conn, Spool.of(b"fast bytes"), now=NOW)
        assert store_raw(conn, Spool.of(b"fast bytes"), now=NOW) == digest  # stored once
        fast_id = add_delivery(conn, new, Spool.of(b"fast bytes"), now=NOW, stored=digest)
        add_delivery(conn, new, None, now=NOW, reason="rejected: no")
    return fast_id


def _read_back(db: Database, fast_id: int) -> None:
    with db.reading() as session:
        read = session.get(Delivery, fast_id)
        assert read is not None
        assert read.received_at == NOW.astimezone(UTC) and read.raw == b"fast bytes"


def test_the_cursor_insert_stores_what_the_core_insert_stores(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, domain="dropbox.test")
    db = Database(settings.db_url)
    fast_id = _insert_both_ways(db)
    db.dispose()
    path = tmp_path / "crmdrop.db"
    core_raw, fast_raw = _rows(path, "raw_messages", skip={"digest", "data"})
    assert core_raw == fast_raw and core_raw["received_at"][1] == "text"
    core_a, core_r, fast_a, fast_r = _rows(path, "deliveries", skip={"id", "raw_digest"})
    assert (core_a, core_r) == (fast_a, fast_r)
    assert fast_a["mail_from"][0] == "ab@sender.example" and len(str(fast_a["author"][0])) == 320
    assert fast_id == 3
    _read_back(db, fast_id)


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_on_postgresql_the_cursor_insert_stores_what_the_core_insert_stores(
    store: tuple[Database, Settings],
) -> None:
    """The same on PostgreSQL (the group commit's writer inserts on psycopg's cursor)."""
    db, _ = store
    fast_id = _insert_both_ways(db)
    with db.read_connection() as conn:
        raws = conn.execute(
            text("SELECT size, received_at FROM raw_messages ORDER BY received_at, size")
        ).all()
        rows = conn.execute(text("SELECT * FROM deliveries ORDER BY id")).mappings().all()
    assert len(raws) == 2 and raws[0] == raws[1]
    core_a, core_r, fast_a, fast_r = (
        {k: v for k, v in row.items() if k not in {"id", "raw_digest"}} for row in rows
    )
    assert (core_a, core_r) == (fast_a, fast_r)
    assert fast_a["mail_from"] == "ab@sender.example" and len(fast_a["author"]) == 320
    assert fast_id == rows[2]["id"]
    _read_back(db, fast_id)
