"""PostgreSQL keeps a backend's plans as first made (a prepared statement's, and the
foreign-key checks'): one made while a table was empty scans it whole however much it
grew. A pooled connection has them remade as it is handed out again (`store/db.py:
_replan_as_connections_age`); here a prepared statement's plan says so."""

from __future__ import annotations

import psycopg
from sqlalchemy import text

from crmdrop.store.db import Database
from tests.support import migrated_with_owner, pg_database

_NOTES = """
INSERT INTO notes (account_id, user_id, delivery_id, message_key, subject, body, own_text,
    author_name, direction, is_forward, created_at)
SELECT %(account)s, %(user)s, %(delivery)s, 'key' || g || '@x', '', repeat('text ', 200), '',
    '', 'in', false, now()
FROM generate_series(1, 5000) g
"""
_DELIVERY = """
INSERT INTO deliveries (account_id, user_id, dropbox_kind, rcpt_to, mail_from, protocol,
    peer, size, subject, author, status, reason, attempts, next_attempt_at, received_at)
VALUES (%(account)s, %(user)s, 'note', 'd@x', 'm@x', 'smtp', '', 1, '', '', 'filed', '', 0,
    now(), now())
RETURNING id
"""


def _plan(db: Database) -> str:
    """The plan of the prepared statement `p` on the pool's one connection."""
    with db.write_engine.connect() as conn:
        return "\n".join(conn.exec_driver_sql("EXPLAIN EXECUTE p(1)").scalars())


def test_a_plan_made_on_an_empty_table_is_remade_as_the_connection_is_used_again() -> None:
    with pg_database() as url:
        ids = migrated_with_owner(url)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("VACUUM ANALYZE notes")  # empty: no page, no row
            db = Database(url)
            with db.write_engine.connect() as conn:  # its first use
                conn.execute(text("SET plan_cache_mode = force_generic_plan"))
                conn.execute(text("PREPARE p(integer) AS SELECT id FROM notes WHERE id = $1"))
                conn.commit()
            assert "Seq Scan on notes" in _plan(db)  # its second use: the table still empty
            delivery = admin.execute(_DELIVERY, ids).fetchone()
            assert delivery is not None
            admin.execute(_NOTES, {**ids, "delivery": delivery[0]})
            assert "Seq Scan on notes" in _plan(db)  # the third: the plan kept
            assert "Index" in _plan(db)  # the fourth: remade on the grown table
            db.dispose()
