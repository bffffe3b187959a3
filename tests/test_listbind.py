"""The filing path's list statements (`store/listbind.in_list`) stay index look-ups.

On SQLite a boolean expression that SQLAlchemy does not know to be a comparison is
rendered `(x IN (...)) = 1` in a WHERE clause, which no index answers: every contact
of the account was scanned for each batch (1M contacts: 628 → 49 filings/s) and no
functional test noticed. Here SQLite's own planner says how each statement is run; on
PostgreSQL, the generic plans of the look-ups that statistics taken on nearly empty
tables had turned into scans of an account's every note or of the whole queue.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pg_sql
from sqlalchemy import Integer, column, insert, select, table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg

from crmdrop.store import accounts, apply, inbound, view
from crmdrop.store.db import Database
from crmdrop.store.listbind import in_list
from crmdrop.store.models import CleanString
from tests.support import migrated_with_owner, pg_database

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


# PostgreSQL: the statements whose generic plan (a prepared statement's) must look each
# value of a list up by an index condition on it, on tables whose statistics were
# gathered when they were almost empty (autovacuum off, or not yet run): each with the
# tables it reads by a list and the column that each one's index condition must name.
ROWS = 6000
STALE: dict[str, tuple[Any, dict[str, str]]] = {
    "filed notes": (view._FILED_NOTES_EACH, {"notes": "message_key"}),
    "thread notes": (view._THREAD_NOTES_EACH, {"notes": "message_key"}),
    "decide prefetch": (
        view._PREFETCH_EACH,
        {
            "notes": "message_key",
            "company_emails": "email",
            "contact_emails": "email",
            "companies": "domain",
        },
    ),
    "lock queued": (inbound._LOCK_QUEUED, {"deliveries": "id"}),
}
# Four rows each, analyzed; then thousands (the deliveries queued), one account's.
_DELIVERIES = """
INSERT INTO deliveries (account_id, user_id, dropbox_kind, rcpt_to, mail_from, protocol,
    peer, size, subject, author, status, reason, attempts, next_attempt_at, received_at)
SELECT %(account)s, %(user)s, 'note', 'd@x', 'm@x', 'smtp', '', 1, '', '', %(status)s, '', 0,
    now(), now()
FROM generate_series(%(first)s::integer, %(last)s::integer)
"""
_ROWS = [
    _DELIVERIES,
    """INSERT INTO notes (account_id, user_id, delivery_id, message_key, subject, body,
        own_text, author_name, direction, is_forward, created_at)
    SELECT %(account)s, %(user)s, (SELECT min(id) FROM deliveries), 'key' || g || '@x', '',
        repeat('text ', 200), '', '', 'in', false, now()
    FROM generate_series(%(first)s::integer, %(last)s::integer) g""",
    """INSERT INTO contacts (id, account_id, name, created_at, last_activity_at)
    SELECT g, %(account)s, 'C', now(), now()
    FROM generate_series(%(first)s::integer, %(last)s::integer) g""",
    """INSERT INTO contact_emails (account_id, contact_id, email)
    SELECT %(account)s, g, 'c' || g || '@d' || g || '.x'
    FROM generate_series(%(first)s::integer, %(last)s::integer) g""",
    """INSERT INTO companies (id, account_id, name, domain, created_at)
    SELECT g, %(account)s, 'D', 'd' || g || '.x', now()
    FROM generate_series(%(first)s::integer, %(last)s::integer) g""",
    """INSERT INTO company_emails (account_id, company_id, email)
    SELECT %(account)s, g, 'info@d' || g || '.x'
    FROM generate_series(%(first)s::integer, %(last)s::integer) g""",
]
# The parameters bound as PostgreSQL receives them (a list as its array's text).
VALUES = {
    "keys": "{key10@x,key20@x,absent@x}",
    "emails": "{c10@d10.x,info@d20.x,absent@x}",
    "domains": "{d10.x,absent.x}",
    "ids": "{1,5,9}",
}


@pytest.fixture(scope="module")
def stale() -> Iterator[tuple[psycopg.Connection[Any], int]]:
    """A database whose filing tables were analyzed at 4 rows (the deliveries filed),
    then grew to thousands (the deliveries queued): one account's notes, its queue,
    contacts and companies."""
    with pg_database() as url:
        ids = migrated_with_owner(url)
        with psycopg.connect(url, autocommit=True) as conn:
            for insert_rows in _ROWS:
                conn.execute(insert_rows, {**ids, "status": "filed", "first": 1, "last": 4})
            conn.execute("ANALYZE")
            for insert_rows in _ROWS:
                conn.execute(insert_rows, {**ids, "status": "queued", "first": 5, "last": ROWS})
            conn.execute("SET plan_cache_mode = force_generic_plan")
            yield conn, ids["account"]


def _scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "Relation Name" in plan:
        yield plan
    for child in plan.get("Plans", []):
        yield from _scans(child)


def _generic_plan(conn: psycopg.Connection[Any], statement: Any, account: int) -> dict[str, Any]:
    """The plan PostgreSQL keeps for `statement` as a prepared statement."""
    compiled = statement.compile(dialect=pg_psycopg.dialect(paramstyle="numeric_dollar"))
    values = {**compiled.params, **VALUES, "account": account}
    args = pg_sql.SQL(", ").join(pg_sql.Literal(values[name]) for name in compiled.positiontup)
    conn.execute("DEALLOCATE ALL")
    conn.execute(pg_sql.SQL("PREPARE p AS {}").format(pg_sql.SQL(compiled.string)))
    row = conn.execute(pg_sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE p({})").format(args)).fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


@pytest.mark.parametrize("name", STALE)
def test_lookups_by_a_list_stay_index_conditions_on_stale_statistics(
    stale: tuple[psycopg.Connection[Any], int], name: str
) -> None:
    """Every table is read by an index scan, and each table read by a list by an index
    condition on the list's column (not on the account alone, the list a filter)."""
    conn, account = stale
    statement, by_list = STALE[name]
    scans = list(_scans(_generic_plan(conn, statement, account)))
    assert all(scan["Node Type"] in ("Index Scan", "Index Only Scan") for scan in scans), scans
    for name_read, key in by_list.items():
        conditions = [s.get("Index Cond", "") for s in scans if s["Relation Name"] == name_read]
        assert any(key in condition for condition in conditions), (name_read, scans)
