"""The filing batch's rows written by binary COPY on PostgreSQL (`store.copyrows`) are the
rows an INSERT writes: scrubbed, cut, defaulted and typed alike; a unique key taken is
still the IntegrityError the worker retries at once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from crmdrop.config import load_settings
from crmdrop.store import accounts
from crmdrop.store.copyrows import copy_rows
from crmdrop.store.db import Database
from crmdrop.store.inbound import NewDelivery, add_delivery
from crmdrop.store.models import Note
from crmdrop.worker import is_known_race
from tests.support import pg_database

DELIVERY = 1
NOTES = Note.__table__
assert isinstance(NOTES, sa.Table)


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[tuple[Database, int, int]]:
    """A migrated PostgreSQL database with one user and one delivery of theirs: (db,
    account id, user id)."""
    with pg_database() as url:
        settings = load_settings(data_dir=tmp_path, domain="dropbox.test", database_url=url)
        db = Database(settings.db_url)
        db.migrate()
        with db.writing() as session:
            user = accounts.add_user(session, "o@mycorp.example", name="O", account="acme")
            ids = (user.account_id, user.id)
            new = NewDelivery(*ids, "note", "d@x", "o@mycorp.example", "smtp", "", None, "s", "o")
            assert add_delivery(session, new, b"x", now=datetime.now(UTC)) == DELIVERY
        yield db, *ids
        db.dispose()


def _note(account_id: int, user_id: int, n: int, **more: Any) -> dict[str, Any]:
    return {
        "id": n,
        "account_id": account_id,
        "user_id": user_id,
        "delivery_id": DELIVERY,
        "message_key": f"<{n}@x>",
        "message_id": f"<{n}@x>",
        "subject": "Pumps\x00 and valves",  # a NUL: scrubbed (CleanText)
        "body": "Body ünïcode\nline two\x00\ttab",
        "author_name": "A" * 400,  # over 320: cut (CleanString(320))
        "author_email": None,
        "sent_at": datetime(2026, 3, 2, 11, 30, tzinfo=UTC),
        "direction": "from_user",
        "created_at": datetime(2026, 3, 2, 12, 0, 0, 123456, tzinfo=UTC),
        **more,
    }


def _read(db: Database, ids: list[int]) -> list[tuple[Any, ...]]:
    with db.reading() as session:
        rows = session.execute(sa.select(NOTES).where(NOTES.c.id.in_(ids)).order_by(NOTES.c.id))
        return [tuple(v for k, v in row._mapping.items() if k != "id") for row in rows]


def test_copied_rows_are_the_rows_an_insert_writes(pg: tuple[Database, int, int]) -> None:
    db, account_id, user_id = pg
    chain = [{"author": None, "text": "quoted\x00", "to": []}]
    # own_text and is_forward left out (their Python defaults), chain None and a list
    variants = [{}, {"chain": chain, "own_text": "mine", "is_forward": True}]
    by_insert = [_note(account_id, user_id, 100 + i, **v) for i, v in enumerate(variants)]
    by_copy = [_note(account_id, user_id, 200 + i, **v) for i, v in enumerate(variants)]
    for row in [*by_insert, *by_copy]:  # each variant has keys of its own
        row["message_key"] += "-" + str(row["id"])
    with db.writing() as session:
        for row in by_insert:
            session.execute(sa.insert(NOTES), [row])
        for row in by_copy:
            assert copy_rows(session, NOTES, [row])
    inserted, copied = _read(db, [100, 101]), _read(db, [200, 201])
    strip = [
        tuple(v for v in row if not (isinstance(v, str) and v.startswith("<"))) for row in inserted
    ]
    assert strip == [
        tuple(v for v in row if not (isinstance(v, str) and v.startswith("<"))) for row in copied
    ]
    first = dict(zip(NOTES.c.keys()[1:], copied[0], strict=True))
    assert first["subject"] == "Pumps and valves" and len(first["author_name"]) == 320
    assert first["own_text"] == "" and first["is_forward"] is False and first["chain"] is None
    assert first["created_at"] == datetime(2026, 3, 2, 12, 0, 0, 123456, tzinfo=UTC)
    second = dict(zip(NOTES.c.keys()[1:], copied[1], strict=True))
    assert second["chain"] == [{"author": None, "text": "quoted", "to": []}]


def test_rows_of_different_keys_or_unknown_columns_are_left_to_the_insert(
    pg: tuple[Database, int, int],
) -> None:
    db, account_id, user_id = pg
    rows = [_note(account_id, user_id, 1), _note(account_id, user_id, 2, own_text="x")]
    with db.writing() as session:
        assert not copy_rows(session, NOTES, rows)
        assert not copy_rows(session, NOTES, [{**rows[0], "no_such_column": 1}])
    assert _read(db, [1, 2]) == []


def test_a_unique_key_taken_is_an_integrity_error_the_worker_retries_at_once(
    pg: tuple[Database, int, int],
) -> None:
    db, account_id, user_id = pg
    row = _note(account_id, user_id, 7)
    with pytest.raises(sa.exc.IntegrityError) as raised, db.writing() as session:
        copy_rows(session, NOTES, [row, row])  # the same id twice
    assert is_known_race(raised.value)  # SQLSTATE 23505 on notes
    assert _read(db, [7]) == []
