"""Engines and sessions. SQLite (WAL, synchronous=FULL) by default, PostgreSQL by URL.

On SQLite, a transaction that reads and then writes can fail with BUSY_SNAPSHOT
in WAL mode (the busy timeout does not help), so writers start with
`BEGIN IMMEDIATE` on their own engine; readers use a plain deferred `BEGIN`.
On PostgreSQL both session factories share one pool; readers run at REPEATABLE
READ so that a multi-query read (an export) sees one consistent snapshot.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaBehind(RuntimeError):
    """The database is older (or newer) than this crmdrop: say how to fix it, touch nothing."""


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    """The newest migration this crmdrop knows."""
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def normalize_url(url: str) -> str:
    """Use psycopg 3 for a bare postgresql:// URL."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        hide_parameters=True,  # errors are logged and stored: never with a token or a message
        pool_size=16,  # one per accept thread and the worker: no reconnecting under load
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if begin == "BEGIN IMMEDIATE":
            wait = not conn.get_execution_options().get(NO_LOCK_WAIT, False)
            _begin_immediate(conn.connection.driver_connection, wait=wait)
        else:
            conn.exec_driver_sql(begin)

    return engine


# SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20 ... ms between its tries: a writer
# that finds the write lock held for 2 ms (the other process's group commit, the
# worker's batch) comes back after 3 or 8 ms. Ours tries again after a fraction of a
# millisecond first, backing off to 5 ms; the time limit stays SQLite's 30 s.
BUSY_TIMEOUT = 30.0  # seconds
_BUSY_FIRST, _BUSY_MAX = 0.0002, 0.005  # seconds between tries, at first and at most

# An execution option of a write connection (SQLite): its `BEGIN IMMEDIATE` does not wait
# for a write lock held elsewhere but raises `LockBusy` at once (the group commit on the
# event loop, which must not sleep, hands its batch to its thread instead).
NO_LOCK_WAIT = "crmdrop_no_lock_wait"


class LockBusy(OperationalError):
    """SQLite's write lock is held by another connection (and we were not to wait)."""


def _begin_immediate(dbapi_connection: sqlite3.Connection, *, wait: bool = True) -> None:
    """`BEGIN IMMEDIATE`: take the write lock, waiting for it as long as SQLite would
    (`wait=False`: not at all, `LockBusy`)."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    delay = _BUSY_FIRST
    dbapi_connection.execute("PRAGMA busy_timeout=0")  # fail at once; we wait, below
    try:
        while True:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) and not wait:
                    raise LockBusy("BEGIN IMMEDIATE", None, exc) from exc
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc  # as before
            time.sleep(delay)
            delay = min(delay * 1.5, _BUSY_MAX)
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")


# A pooled PostgreSQL connection that sat unused this long is checked before it is
# handed out (a restarted server leaves every pooled connection dead).
PING_AFTER_IDLE = 1.0  # seconds


# An execution option: the statement's rows come back in PostgreSQL's binary format. A
# bytea column comes as its bytes, not as hex text twice their size that the server
# encodes and psycopg decodes (a batch of 32 raw messages of 5 KB: ≈ 110 instead of
# ≈ 380 µs of the worker's CPU, and a third of the wall time). SQLite ignores it.
BINARY_RESULTS = "crmdrop_binary_results"


def _binary_results_on_request(engine: Engine) -> None:
    """Run a statement marked with `BINARY_RESULTS` through psycopg's binary results
    (`cursor.execute(..., binary=True)`); SQLAlchemy's result handling is unchanged."""

    @event.listens_for(engine, "do_execute")
    def _execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        if not context.execution_options.get(BINARY_RESULTS):
            return False
        cursor.execute(statement, parameters, binary=True)
        return True


def _ping_when_idle(engine: Engine) -> None:
    """Check a connection at checkout only when it was idle past `PING_AFTER_IDLE`.

    `pool_pre_ping` checks every checkout: a round trip and a transaction of its own,
    before each of the worker's transactions and each group commit. A
    connection back in use within the second was working a moment ago; one that fails
    anyway is invalidated by SQLAlchemy on the error, as it would be mid-transaction."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
            dbapi_connection.rollback()
        except Exception as exc:  # the pool drops it and checks out another (a new one)
            raise DisconnectionError(f"a pooled connection is dead: {exc}") from exc


# A connection's cached plans are remade when it is handed out for the 2nd, 4th, 8th, ...
# time, and at least this often (`_replan_as_connections_age`).
REPLAN_EVERY = 600.0  # seconds


def _replan_as_connections_age(engine: Engine) -> None:
    """`DISCARD PLANS` on a connection as it ages: PostgreSQL keeps a backend's plans
    (psycopg's prepared statements, and the foreign-key checks' own) as first made, and
    a plan made while a table was a page or two is a sequential scan. A worker started
    on an empty database checked each `note_contacts` row's note so: 12,000 scans of
    `notes` (36M rows read) in a 6,000-message drain, its rate halved by the end.
    Statistics refreshed by (auto)ANALYZE remake them too; this does not wait for it.
    Replanning at uses that double follows a table that grows with the use."""

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        uses = record.info["uses"] = record.info.get("uses", 0) + 1
        now = time.monotonic()
        doubled = uses > 1 and not uses & (uses - 1)
        if not doubled and now - record.info.setdefault("replanned", now) < REPLAN_EVERY:
            return
        record.info["replanned"] = now
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True  # one round trip, no transaction around it
        try:
            dbapi_connection.execute("DISCARD PLANS")
        finally:
            dbapi_connection.autocommit = autocommit


@contextmanager
def pipelined(conn: Connection, *, copies: bool = False) -> Iterator[Connection]:
    """PostgreSQL: the statements run on `conn`'s driver inside the block are sent without
    waiting for each other's answers (psycopg's pipeline mode), with the transaction's
    BEGIN; a result asked for inside it, or the block's end, waits for them all. For
    writes that need no answer in between (the group commit's NOTIFY and INSERTs): one
    round trip where each was one. `copies`: the block runs a COPY (a message streamed
    from its spool file), which pipeline mode refuses. Either way, or on SQLite (no round
    trips to save), the block runs as it is."""
    if conn.dialect.name != "postgresql" or copies:
        yield conn
        return
    with conn.connection.driver_connection.pipeline():  # type: ignore[union-attr]
        yield conn


class Database:
    """The two session factories (read, write) over one database."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        # The database file (SQLite on disk): the cache's version check and the
        # worker's wake-up socket live beside it.
        self.sqlite_file: Path | None = None
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            self.sqlite_file = Path(parsed.database).resolve()
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = _sqlite_engine(self.url, "BEGIN IMMEDIATE")
            self.read_engine = _sqlite_engine(self.url, "BEGIN")
        else:
            self.write_engine = create_engine(self.url, pool_size=10, hide_parameters=True)
            _ping_when_idle(self.write_engine)
            _replan_as_connections_age(self.write_engine)
            _binary_results_on_request(self.write_engine)
            # One snapshot per read transaction: an export must not see half a filing.
            self.read_engine = self.write_engine.execution_options(
                isolation_level="REPEATABLE READ"
            )
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any error."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A plain Core connection in a write transaction: for the SMTP accept path."""
        with self.write_engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A plain Core connection in a read transaction: for the hot RCPT lookup."""
        with self.read_engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """PostgreSQL: a connection outside any transaction block, where a statement is
        a transaction of its own — one round trip, no BEGIN and COMMIT around it."""
        with self.write_engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    def revision(self) -> str | None:
        """The schema's migration, None for an empty database."""
        with self.read_engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def require_current(self) -> None:
        """Stop unless the schema is this crmdrop's: commands other than `migrate` and
        `serve` never upgrade it, so two processes never race an upgrade."""
        current, head = self.revision(), head_revision()
        if current != head:
            raise SchemaBehind(
                f"the database schema is at {current or 'nothing (empty database)'}, this "
                f"crmdrop needs {head}: run `crmdrop migrate` first (or start `crmdrop serve`, "
                "which migrates once at start)"
            )

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (cheap when it already is)."""
        cfg = _alembic_config()
        head = head_revision()
        with self.write_engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            if current == head:
                return
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.is_sqlite:
            self.read_engine.dispose()
