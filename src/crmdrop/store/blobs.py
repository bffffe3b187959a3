"""Large values written in chunks, inside the caller's transaction.

A 25 MB message or attachment bound as one parameter is held by Python and copied
again by the driver; written in pieces, memory stays at one chunk. SQLite: the row is
inserted with a `zeroblob(n)` of the final size, then filled through incremental blob
I/O (`sqlite3.Connection.blobopen`) on the same connection, so in the same
transaction. PostgreSQL: `COPY ... FROM STDIN` streams the bytes to the server.
"""

from __future__ import annotations

import binascii
import io
import struct
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Insert, Table, TextClause, bindparam, func, literal_column, text
from sqlalchemy.orm import Session


def driver_connection(conn: Connection | Session) -> Any:
    """The DB-API connection (sqlite3 or psycopg) under `conn`, in its transaction."""
    connection = conn.connection() if isinstance(conn, Session) else conn
    return connection.connection.driver_connection


def zeroblob_insert(statement: Insert, column: str, *, returning: str) -> Insert:
    """`statement` (SQLite) with `column` set to `zeroblob(:blob_size)`, returning a column."""
    zero = func.zeroblob(bindparam("blob_size"))
    return statement.values({column: zero}).returning(literal_column(returning))


def fill_blob(
    conn: Connection | Session, table: str, column: str, rowid: int, chunks: Iterable[bytes]
) -> int:
    """Write `chunks` into the zeroblob of row `rowid` (SQLite); the bytes written."""
    written = 0
    with driver_connection(conn).blobopen(table, column, rowid) as blob:
        for chunk in chunks:
            blob.write(chunk)
            written += len(chunk)
    return written


def read_blob(conn: Connection | Session, table: str, column: str, rowid: int) -> bytes:
    """A whole blob (SQLite), read into one `bytes` without SQLite's own copy of it."""
    with driver_connection(conn).blobopen(table, column, rowid, readonly=True) as blob:
        return bytes(blob.read())


_CHUNK = 1024 * 1024


def read_bytea(
    conn: Connection | Session, table: str, column: str, digest: str, size: int
) -> bytes:
    """A whole bytea (PostgreSQL) read a slice at a time into one `bytes`: as one value,
    the driver would hold its hex text (twice its size) besides the bytes."""
    sql = text(f"SELECT substring({column} FROM :start FOR :count) FROM {table} WHERE digest = :d")
    buffer = io.BytesIO()
    for start in range(1, size + 1, _CHUNK):
        chunk = conn.execute(sql, dict(start=start, count=_CHUNK, d=digest)).scalar_one()
        buffer.write(chunk)
    return buffer.getvalue()


# PostgreSQL: COPY knows no ON CONFLICT, so the bytes go to a temporary table first
# (one per session, emptied at commit) and from there, server-side, to raw_messages.
_RAW_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS raw_messages_incoming "
    "(digest varchar(64), data bytea, size integer, received_at timestamptz) "
    "ON COMMIT DELETE ROWS"
)
_RAW_MOVE = (
    "INSERT INTO raw_messages (digest, data, size, received_at) "
    "SELECT digest, data, size, received_at FROM raw_messages_incoming "
    "ON CONFLICT (digest) DO NOTHING"
)


def copy_raw_postgresql(
    conn: Connection, digest: str, size: int, chunks: Iterable[bytes], *, now: datetime
) -> None:
    """Store a raw message once (ON CONFLICT DO NOTHING) without holding its bytes:
    streamed by COPY (text format, bytea as hex), one chunk at a time."""
    with driver_connection(conn).cursor() as cursor:
        cursor.execute(_RAW_STAGE)
        sql = "COPY raw_messages_incoming (digest, data, size, received_at) FROM STDIN"
        with cursor.copy(sql) as copy:
            copy.write(digest.encode("ascii") + b"\t\\\\x")
            for chunk in chunks:
                copy.write(binascii.hexlify(chunk))
            copy.write(f"\t{size}\t{now.astimezone(UTC).isoformat()}\n".encode("ascii"))
        cursor.execute(_RAW_MOVE)
        cursor.execute("DELETE FROM raw_messages_incoming")


# PostgreSQL, a large value of a new row: staged by binary COPY in a temporary table (one
# per session, emptied at commit), then moved into the row by one INSERT ... SELECT.
_BYTEA_STAGE = "CREATE TEMP TABLE IF NOT EXISTS bytea_incoming (data bytea) ON COMMIT DELETE ROWS"
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # no flags, no header extension
_COPY_END = b"\xff\xff"


@cache
def _streamed_insert(table: Table, names: tuple[str, ...], column: str) -> TextClause:
    # The CTE empties the stage as it reads it; the columns' own types bind the values.
    return text(
        "WITH staged AS (DELETE FROM bytea_incoming RETURNING data) "
        f"INSERT INTO {table.name} ({', '.join(names)}, {column}) "
        f"SELECT {', '.join(':' + n for n in names)}, data FROM staged"
    ).bindparams(*(bindparam(n, type_=table.c[n].type) for n in names))


def insert_streamed_postgresql(
    conn: Connection | Session,
    table: Table,
    values: dict[str, Any],
    column: str,
    size: int,
    chunks: Iterable[bytes],
) -> None:
    """INSERT a row of `table` whose `column` gets `chunks` (`size` bytes in all), without
    holding them: binary COPY sends them as they come (bound as one parameter, the value
    would be held whole, and psycopg would send it as hex text besides). A stream that is
    not `size` bytes long fails the COPY, so the transaction: no cut value is stored."""
    with driver_connection(conn).cursor() as cursor:
        cursor.execute(_BYTEA_STAGE)
        with cursor.copy("COPY bytea_incoming (data) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(_COPY_SIGNATURE + struct.pack("!hi", 1, size))  # one field of `size`
            written = 0
            for chunk in chunks:
                written += len(chunk)
                if written > size:
                    break
                copy.write(chunk)
            if written != size:
                raise RuntimeError(f"streamed {written} bytes into a value of {size}")
            copy.write(_COPY_END)
    conn.execute(_streamed_insert(table, tuple(values), column), values)
