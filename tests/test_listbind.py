"""The filing path's list statements (`store/listbind.in_list`) stay index look-ups.

On SQLite a boolean expression that SQLAlchemy does not know to be a comparison is
rendered `(x IN (...)) = 1` in a WHERE clause, which no index answers: every contact
of the account was scanned for each batch (1M contacts: 628 → 49 filings/s) and no
functional test noticed. Here SQLite's own planner says how each statement is run.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Integer, column, insert, select, table, text
from sqlalchemy.dialects import postgresql, sqlite

from crmdrop.store import accounts, apply, inbound, view
from crmdrop.store.db import Database
from crmdrop.store.listbind import in_list
from crmdrop.store.models import CleanString
from tests.support import pg_database

STATEMENTS: dict[str, Any] = {
    "touch contacts": apply._TOUCH,
    "contacts by address": apply._CONTACTS_OF,
    "decide prefetch": view._PREFETCH,
    "filed notes": view._FILED_NOTES,
    "thread notes": view._THREAD_NOTES,
    "thread cases": view._THREAD_CASES,
    "thread opportunities": view._THREAD_OPPS,
    "thread contacts": view._THREAD_CONTACTS,
    "claim": inbound._CLAIM,
    "load claimed": inbound._LOAD_CLAIMED,
    "lock queued": inbound._LOCK_QUEUED,
    "batch owners": accounts._OWNERS,
}


def _sqlite_text(statement: Any) -> str:
    """The statement as SQLite runs it, each expanding list as two placeholders."""
    sql = str(statement.compile(dialect=sqlite.dialect()))
    return re.sub(r"\(__\[POSTCOMPILE_\w+\]\)", "(?, ?)", sql)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    path: Path = tmp_path_factory.mktemp("listbind") / "plan.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    return sqlite3.connect(path)


@pytest.mark.parametrize("name", STATEMENTS)
def test_each_list_statement_is_answered_by_an_index_on_sqlite(
    migrated: sqlite3.Connection, name: str
) -> None:
    sql = _sqlite_text(STATEMENTS[name])
    assert "= 1" not in sql, sql
    plan = [row[3] for row in migrated.execute("EXPLAIN QUERY PLAN " + sql, [1] * sql.count("?"))]
    scans = [step for step in plan if step.startswith("SCAN ")]
    assert not scans, (sql, plan)


def test_the_list_renders_as_in_on_sqlite_and_any_on_postgresql() -> None:
    t = table("t", column("id", Integer))
    query = select(t.c.id).where(in_list(t.c.id, "ids"))
    assert str(query.compile(dialect=sqlite.dialect())).endswith(
        "WHERE t.id IN (__[POSTCOMPILE_ids])"
    )
    assert str(query.compile(dialect=postgresql.dialect())).endswith(
        "WHERE t.id = ANY (CAST(%(ids)s::VARCHAR AS INTEGER[]))"
    )


# Strings an address or message key may hold that the text of an array must quote.
AWKWARD = ['a"b@x', "c\\d@x", "x,y@x", "{z}@x", " sp@x ", "NULL", "üñí@x", "it's@x", ""]


def test_lists_reach_postgresql_as_they_are(tmp_path: Path) -> None:
    """The lists bound as the text of an array (`listbind.ArrayText`) find every value:
    quotes, backslashes, commas, braces, spaces, the word NULL; a NUL is dropped, as
    `CleanString` drops it when the value is stored."""
    with pg_database() as url:
        db = Database(url)
        t = table("t", column("id", Integer), column("email", CleanString(320)))
        with db.writing() as session:
            session.execute(text("CREATE TABLE t (id integer, email varchar(320))"))
            session.execute(
                insert(t), [{"id": i, "email": e} for i, e in enumerate([*AWKWARD, "nul"])]
            )
        by_email = select(t.c.id).where(in_list(t.c.email, "emails"))
        by_id = select(t.c.email).where(in_list(t.c.id, "ids"))
        with db.reading() as session:
            found = session.scalars(by_email, {"emails": [*AWKWARD, "n\x00ul", "absent"]})
            assert sorted(found) == list(range(len(AWKWARD) + 1))
            emails = session.scalars(by_id, {"ids": list(range(len(AWKWARD)))})
            assert sorted(emails) == sorted(AWKWARD)
        db.dispose()
