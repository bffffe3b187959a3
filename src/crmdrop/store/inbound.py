"""The inbound queue: deliveries stored before the 250, claimed by the worker,
finished, retried with backoff, or parked as failed (SPEC §6.1, §6.3)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    Insert,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal_column,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from crmdrop.spool import Spool
from crmdrop.store.blobs import (
    copy_raw_postgresql,
    driver_connection,
    fill_blob,
    read_blob,
    read_bytea,
    zeroblob_insert,
)
from crmdrop.store.db import BINARY_RESULTS
from crmdrop.store.listbind import ArrayText, in_list
from crmdrop.store.models import CleanJSONText, Delivery, IntakeKey, RawMessage, table_of
from crmdrop.store.status import DeliveryStatus
from crmdrop.store.webhooks import Event, emit_delivery, emit_on_connection

QUEUED, FAILED, REJECTED = DeliveryStatus.QUEUED, DeliveryStatus.FAILED, DeliveryStatus.REJECTED


@dataclass(frozen=True)
class NewDelivery:
    """One accepted (or refused) message to one dropbox, as receive hands it over."""

    account_id: int
    user_id: int
    dropbox_kind: str
    rcpt_to: str
    mail_from: str
    protocol: str
    peer: str
    message_id: str | None
    subject: str
    author: str
    sender_auth: str = ""  # the SPF/DKIM/DMARC verdict, recorded either way (SPEC §7.2)


# On the Core table: insert(Delivery) would go through the ORM's bulk-insert machinery.
_INSERT_DELIVERY = insert(table_of(Delivery)).returning(table_of(Delivery).c.id)


_RAW = RawMessage.__table__
assert isinstance(_RAW, Table)
# Stored once: a second delivery of the same bytes (another dropbox, a retry by the
# sender's MTA) finds the row there. ON CONFLICT waits for a concurrent insert of it.
_INSERT_RAW: dict[str, Insert] = {
    "sqlite": sqlite.insert(_RAW).on_conflict_do_nothing(index_elements=["digest"]),
    "postgresql": postgresql.insert(_RAW).on_conflict_do_nothing(index_elements=["digest"]),
}


# SQLite, a spooled message: a zeroblob of its size, filled in chunks (`store.blobs`).
_INSERT_RAW_ZEROBLOB = zeroblob_insert(_INSERT_RAW["sqlite"], "data", returning="rowid")


class DriverInsert:
    """An INSERT run on the DB-API cursor of the caller's connection (so in its
    transaction; sqlite3 or psycopg), its values bound through SQLAlchemy's own type
    processing (`dialect_impl(...).bind_processor`): the same stored values as the Core
    statement, without SQLAlchemy's per-execution work, which was most of the Python in
    the SMTP group commit (and the GIL it holds is the event loop's). Accept path only."""

    def __init__(
        self, table: Table, columns: tuple[str, ...], *, suffix: str = "", returning: str = ""
    ) -> None:
        self.table, self.columns, self.returning = table, columns, returning
        head = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
        self.sql = {
            # SQLite: the rowid comes back as `lastrowid`; psycopg needs RETURNING.
            "sqlite": f"{head}({', '.join('?' for _ in columns)}){suffix}",
            "postgresql": f"{head}({', '.join('%s' for _ in columns)}){suffix}"
            + (f" RETURNING {returning}" if returning else ""),
        }
        self._processors: dict[object, list[Callable[[Any], Any] | None]] = {}

    def _bind(self, dialect: Dialect) -> list[Callable[[Any], Any] | None]:
        found = self._processors.get(dialect)
        if found is None:
            types = [self.table.c[name].type for name in self.columns]
            found = [t.dialect_impl(dialect).bind_processor(dialect) for t in types]
            self._processors[dialect] = found
        return found

    def _params(self, dialect: Dialect, values: dict[str, Any]) -> tuple[Any, ...]:
        row = [values[name] for name in self.columns]
        processors = self._bind(dialect)
        return tuple(v if p is None else p(v) for p, v in zip(processors, row, strict=True))

    def run_many(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert `rows`; their ids, in order (as `run`). On PostgreSQL in one round trip
        (psycopg pipelines an executemany), where `run` is one per row: the group commit
        of ten sessions' messages spent most of its time waiting on those."""
        if conn.dialect.name != "postgresql" or len(rows) < 2:
            return [self.run(conn, values) for values in rows]
        params = [self._params(conn.dialect, values) for values in rows]
        cursor = driver_connection(conn).cursor()
        try:
            cursor.executemany(self.sql["postgresql"], params, returning=bool(self.returning))
            if not self.returning:
                return [0] * len(rows)
            ids: list[int] = []
            while True:
                found = cursor.fetchone()
                ids.append(int(found[0]) if found else 0)
                if not cursor.nextset():
                    return ids
        finally:
            cursor.close()

    def run(self, conn: Connection, values: dict[str, Any]) -> int:
        """Insert one row; its id (SQLite: the rowid; PostgreSQL: the `returning`
        column, 0 when no row was inserted)."""
        dialect = conn.dialect
        params = self._params(dialect, values)
        cursor = driver_connection(conn).cursor()
        try:
            cursor.execute(self.sql[dialect.name], params)
            if dialect.name == "sqlite":
                return int(cursor.lastrowid or 0)
            found = cursor.fetchone() if self.returning else None
            return int(found[0]) if found else 0
        finally:
            cursor.close()


_DRIVER_DIALECTS = ("sqlite", "postgresql")


_DELIVERY = Delivery.__table__
assert isinstance(_DELIVERY, Table)
_DRIVER_DELIVERY = DriverInsert(
    _DELIVERY,
    (
        "account_id",
        "user_id",
        "dropbox_kind",
        "rcpt_to",
        "mail_from",
        "protocol",
        "peer",
        "raw_digest",
        "size",
        "message_id",
        "subject",
        "author",
        "sender_auth",
        "status",
        "reason",
        "attempts",
        "next_attempt_at",
        "received_at",
        "finished_at",
    ),
    returning="id",
)
_DRIVER_RAW = DriverInsert(
    _RAW, ("digest", "size", "received_at", "data"), suffix=" ON CONFLICT (digest) DO NOTHING"
)


def raw_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def store_raw(conn: Connection | Session, raw: bytes | Spool, *, now: datetime) -> str:
    """Keep the message's bytes once (keyed by their SHA-256); the key.

    A `Spool` in a file is streamed into the database a chunk at a time, never held
    whole; one in memory (small) is bound as it is, without a copy.
    """
    digest = raw.digest if isinstance(raw, Spool) else raw_digest(raw)
    dialect = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    if isinstance(raw, Spool) and raw.on_disk:
        _stream_raw(conn, dialect, raw, now=now)
        return digest
    values = _raw_row(digest, raw.getvalue() if isinstance(raw, Spool) else raw, now)
    if dialect in _DRIVER_DIALECTS and isinstance(conn, Connection):
        _DRIVER_RAW.run(conn, values)
    else:
        conn.execute(_INSERT_RAW[dialect], values)
    return digest


def _raw_row(digest: str, data: bytes, now: datetime) -> dict[str, Any]:
    return dict(digest=digest, data=data, size=len(data), received_at=now)


def _stream_raw(conn: Connection | Session, dialect: str, raw: Spool, *, now: datetime) -> None:
    if dialect == "postgresql":
        connection = conn.connection() if isinstance(conn, Session) else conn
        copy_raw_postgresql(connection, raw.digest, raw.size, raw.chunks(), now=now)
        return
    values = dict(digest=raw.digest, size=raw.size, received_at=now, blob_size=raw.size)
    rowid = conn.execute(_INSERT_RAW_ZEROBLOB, values).scalar()
    if rowid is not None:  # None: these bytes were stored already
        written = fill_blob(conn, "raw_messages", "data", int(rowid), raw.chunks())
        if written != raw.size:  # the spool changed under us: never commit a cut message
            raise RuntimeError(f"wrote {written} of {raw.size} bytes of a raw message")


def add_delivery(
    conn: Connection | Session,
    new: NewDelivery,
    raw: bytes | Spool | None,
    *,
    now: datetime,
    reason: str = "",
    stored: str | None = None,
) -> int:
    """Queue the raw bytes (raw=None records a refusal at end of DATA, status rejected).

    `stored`: the digest `store_raw` returned for these bytes in this transaction (the
    bytes of a message to many dropboxes go to the database once). A Core INSERT, not
    an ORM object: this is on the SMTP accept path.
    """
    if raw is not None and stored is None:
        stored = store_raw(conn, raw, now=now)
    values = _delivery_row(new, raw, now=now, reason=reason, stored=stored)
    if isinstance(conn, Connection) and conn.dialect.name in _DRIVER_DIALECTS:
        return _DRIVER_DELIVERY.run(conn, values)
    # Values as parameters, not .values(): one statement, compiled once and cached.
    new_id = conn.execute(_INSERT_DELIVERY, values).scalar_one()
    return int(new_id)


def add_deliveries(
    conn: Connection, queued: list[tuple[NewDelivery, Spool]], *, now: datetime
) -> list[int]:
    """Queue several messages' deliveries at once (the accept path's group commit): each
    message's bytes stored once, then every delivery; on PostgreSQL two round trips in
    all (`DriverInsert.run_many`), not two per message. Their ids, in order."""
    digests: dict[int, str] = {}  # id() of each message's Spool → its stored digest
    in_memory: list[dict[str, Any]] = []
    for _, raw in queued:
        if id(raw) in digests:
            continue  # a message to several dropboxes: its bytes once
        if raw.on_disk:
            digests[id(raw)] = store_raw(conn, raw, now=now)  # streamed, never whole
            continue
        digests[id(raw)] = raw.digest
        in_memory.append(_raw_row(raw.digest, raw.getvalue(), now))
    _DRIVER_RAW.run_many(conn, in_memory)
    rows = [_delivery_row(new, raw, now=now, stored=digests[id(raw)]) for new, raw in queued]
    return _DRIVER_DELIVERY.run_many(conn, rows)


def _delivery_row(
    new: NewDelivery,
    raw: bytes | Spool | None,
    *,
    now: datetime,
    reason: str = "",
    stored: str | None,
) -> dict[str, Any]:
    """A delivery's column values: queued with its raw bytes' digest, or (raw None) a
    refusal at the end of DATA, finished at once."""
    return dict(
        account_id=new.account_id,
        user_id=new.user_id,
        dropbox_kind=new.dropbox_kind,
        rcpt_to=new.rcpt_to,
        mail_from=new.mail_from,
        protocol=new.protocol,
        peer=new.peer,
        raw_digest=stored if raw is not None else None,
        size=len(raw) if raw is not None else 0,
        message_id=new.message_id or None,
        subject=new.subject[:2000],
        author=new.author,
        sender_auth=new.sender_auth,
        status=QUEUED if raw is not None else REJECTED,
        reason=reason,
        attempts=0,
        next_attempt_at=now,
        received_at=now,
        finished_at=None if raw is not None else now,
    )


def reject_at_intake(conn: Connection, new: NewDelivery, refusal: str, *, now: datetime) -> int:
    """Record a message refused at the end of DATA (status rejected, no raw bytes kept)
    and queue `delivery.rejected` for the account's endpoints that want it — the owner
    learns of mail refused in their name. The id of the delivery record."""
    reason = f"rejected: {refusal}"
    delivery_id = add_delivery(conn, new, None, now=now, reason=reason)
    data = {
        "id": delivery_id,
        "status": DeliveryStatus.REJECTED.value,
        "reason": reason,
        "user_id": new.user_id,
        "dropbox": new.dropbox_kind,
        "subject": new.subject,
        "author": new.author,
        "message_id": new.message_id,
        "attempts": 0,
        "received_at": now.isoformat(),
        "stage": "intake",
    }
    emit_on_connection(conn, new.account_id, Event.DELIVERY_REJECTED, data, now=now)
    return delivery_id


def intake_key_seen(conn: Connection | Session, source: str, key: str) -> bool:
    """Has `source` already handed over `key` (a used token, a queued IMAP message)?"""
    found = conn.execute(
        select(IntakeKey.key).where(IntakeKey.source == source, IntakeKey.key == key)
    ).first()
    return found is not None


def claim_intake_key(conn: Connection | Session, source: str, key: str, *, now: datetime) -> bool:
    """Record `key` in the caller's transaction; False when it was already there.

    Two transactions racing on one key: the second fails on the primary key and is
    rolled back whole (its caller answers "try again", and then sees the key).
    """
    if intake_key_seen(conn, source, key):
        return False
    conn.execute(insert(IntakeKey).values(source=source, key=key, created_at=now))
    return True


def prune_intake_keys(session: Session, source: str, *, before: datetime, limit: int = 500) -> int:
    """Forget up to `limit` of `source`'s keys recorded before `before` (how many; call
    again until 0). Only for a source whose requests expire — a Mailgun token signed
    with a timestamp: once that is out of the freshness window a replay is refused for
    its age, so the key has nothing left to guard. (IMAP keys stay: a message can sit
    unmoved in the mailbox for as long as it likes.)"""
    keys = session.execute(
        select(IntakeKey.key)
        .where(IntakeKey.source == source, IntakeKey.created_at < before)
        .limit(limit)
    ).all()
    if keys:
        session.execute(
            delete(IntakeKey).where(
                IntakeKey.source == source, IntakeKey.key.in_([k.key for k in keys])
            ),
            execution_options={"synchronize_session": False},
        )
    return len(keys)


# A claim older than this is a dead worker's (PostgreSQL; on SQLite, where one worker
# runs, a starting worker releases every claim at once). Filing takes milliseconds.
# The default of CRMDROP_CLAIM_LEASE_SECONDS.
LEASE = timedelta(minutes=5)


# The claim's statements, built once (Core, bound parameters): building and hashing them
# for every batch cost more CPU than running them. `_due` as parameters: `now`, and
# `stale` (= now - the lease).
_DELIVERIES = Delivery.__table__
assert isinstance(_DELIVERIES, Table)
_D = _DELIVERIES.c
_NOW = bindparam("now", type_=_D.next_attempt_at.type)
_DUE = and_(
    _D.status == QUEUED,
    _D.next_attempt_at <= _NOW,
    or_(_D.claimed_at.is_(None), _D.claimed_at < bindparam("stale", type_=_D.claimed_at.type)),
)
_CLAIMABLE = (
    select(_D.id, _D.size, _D.attempts)
    .where(_DUE)
    .order_by(_D.next_attempt_at, _D.id)
    .limit(bindparam("limit", type_=Integer))
)
_CLAIMABLE_SKIP_LOCKED = _CLAIMABLE.with_for_update(skip_locked=True)
_COLUMNS = [
    _D[name]
    for name in [
        "id",
        "account_id",
        "user_id",
        "dropbox_kind",
        "mail_from",
        "subject",
        "author",
        "message_id",
        "sender_auth",
        "attempts",
        "received_at",
        "status",
        "reason",
    ]
]
# A raw message up to this size comes with its claim (at most 32 of them, 8 MiB); a
# larger one is read in pieces (`load_large`), never whole by the database driver.
_SMALL_RAW = 256 * 1024
_RAW_DATA = _RAW.c
_SMALL_RAW_DATA = (
    select(case((_RAW_DATA.size <= _SMALL_RAW, _RAW_DATA.data), else_=None))
    .where(_RAW_DATA.digest == _D.raw_digest)
    .scalar_subquery()
)
_CLAIM = (
    update(_DELIVERIES)
    .where(in_list(_D.id, "ids"))
    .values(attempts=_D.attempts + 1, claimed_at=_NOW)
)
# On PostgreSQL the claim is one statement: it picks the due deliveries (one more than
# it may claim: that one says whether more is due) under SKIP LOCKED, claims those within
# the limits, and returns, for each delivery picked in order, whether its attempts are
# exhausted and, for one it claimed, what the worker files: its columns and a small raw
# message (in PostgreSQL's binary format, not as hex text twice the size). Run outside a
# transaction block, that is one round trip where BEGIN, SELECT, UPDATE and COMMIT were
# four — and the one round trip of a worker that finds nothing due.
_MAX_ATTEMPTS = bindparam("max_attempts", type_=Integer)
_PICKED = _CLAIMABLE.add_columns(_D.next_attempt_at).with_for_update(skip_locked=True).cte("picked")
_P = _PICKED.c
_IN_PICK_ORDER = [_P.next_attempt_at, _P.id]
_LIVE = _P.attempts < _MAX_ATTEMPTS
_RANKED = select(
    _P.id,
    (_P.attempts >= _MAX_ATTEMPTS).label("exhausted"),
    func.row_number().over(order_by=_IN_PICK_ORDER).label("place"),
    func.count().filter(_LIVE).over(order_by=_IN_PICK_ORDER).label("n"),
    func.sum(_P.size).filter(_LIVE).over(order_by=_IN_PICK_ORDER).label("total"),
).cte("ranked")
_R = _RANKED.c
_CLAIMED = (
    update(_DELIVERIES)
    .where(
        _D.id == _R.id,
        not_(_R.exhausted),
        _R.n <= bindparam("claim", type_=Integer),
        or_(_R.n == 1, _R.total <= bindparam("max_bytes", type_=BigInteger)),
    )
    .values(attempts=_D.attempts + 1, claimed_at=_NOW)
    .returning(*_COLUMNS, _D.raw_digest, _SMALL_RAW_DATA.label("raw"))
    .cte("claimed")
)
_CLAIM_AT_ONCE = (
    select(
        _R.id,
        _R.exhausted,
        *[_CLAIMED.c[c.name] for c in _COLUMNS],
        _CLAIMED.c.raw_digest,
        _CLAIMED.c.raw,
    )
    .select_from(_RANKED.outerjoin(_CLAIMED, _CLAIMED.c.id == _R.id))
    .order_by(_R.place)
    .execution_options(**{BINARY_RESULTS: True})
)
# On SQLite (no round trips) the claim is `_CLAIMABLE`, `_CLAIM`, then this load, in one
# transaction: no index answers a subquery in SQLite's RETURNING (every raw message
# would be scanned).
_LOAD_CLAIMED = (
    select(*_COLUMNS, _D.raw_digest, case((_RAW_DATA.size <= _SMALL_RAW, _RAW_DATA.data)))
    .select_from(_DELIVERIES.outerjoin(_RAW))
    .where(in_list(_D.id, "ids"))
)


@dataclass(eq=False)
class ClaimedDelivery:
    """A claimed delivery as the worker reads and finishes it: its columns, not an ORM
    object (no identity map, no unit of work on the filing path). The filing step sets
    the outcome fields; `finish_deliveries` writes them, one statement for a batch."""

    id: int
    account_id: int
    user_id: int
    dropbox_kind: str
    mail_from: str
    subject: str
    author: str
    message_id: str | None
    sender_auth: str
    attempts: int
    received_at: datetime
    status: str
    reason: str
    raw_digest: str | None = None  # set by the claim (the key of its raw message)
    raw: bytes | None = None  # set by the claim (a small message) or `load_large`
    note_id: int | None = None  # set: written (None leaves the column as it is)
    plan: dict[str, object] | None = None  # set: written (a refusal writes none)


class Claim(NamedTuple):
    """What `claim_due` did: the deliveries claimed (in claim order, a small message's
    bytes loaded), how many deliveries it parked, and whether another delivery was
    still due when it claimed (the worker claims again at once instead of waiting to
    be woken)."""

    deliveries: list[ClaimedDelivery]
    parked: int
    more: bool


def claim_due(
    session: Session,
    now: datetime,
    *,
    limit: int,
    max_bytes: int,
    max_attempts: int,
    skip_locked: bool,
    lease: timedelta = LEASE,
) -> Claim:
    """Claim due deliveries for this worker, in the caller's transaction.

    Claiming counts the attempt, so a message that kills or hangs the worker — whose
    failure no exception handler ever records — is still parked after `max_attempts`.
    At most `limit` deliveries and, past the first, `max_bytes` of raw message.
    It reads one row more than it may claim: that row says whether anything is left
    (it was a second statement, `SELECT … LIMIT 1`, after every partial batch). Under
    SKIP LOCKED that row stays locked until this short transaction ends; a worker that
    skips it meanwhile sees no more due, but this one does and claims again.
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        picked = pick_due(
            conn, now, limit=limit, max_bytes=max_bytes, max_attempts=max_attempts, lease=lease
        )
    else:
        picked = _pick_due_in_two(conn, now, limit, max_bytes, max_attempts, lease, skip_locked)
    parked = park_exhausted(session, picked.exhausted, now, max_attempts)
    return Claim(picked.deliveries, parked, picked.more)


class Picked(NamedTuple):
    """A claim before its exhausted deliveries are parked (`park_exhausted`)."""

    deliveries: list[ClaimedDelivery]
    exhausted: list[int]
    more: bool


def pick_due(
    conn: Connection,
    now: datetime,
    *,
    limit: int,
    max_bytes: int,
    max_attempts: int,
    lease: timedelta = LEASE,
) -> Picked:
    """PostgreSQL: claim due deliveries in one statement (`_CLAIM_AT_ONCE`); on a
    connection outside a transaction block it is a transaction of its own, one round
    trip. Deliveries out of attempts are picked, not claimed: for `park_exhausted`."""
    params = {
        "now": now,
        "stale": now - lease,
        "limit": limit + 1,
        "claim": limit,
        "max_bytes": max_bytes,
        "max_attempts": max_attempts,
    }
    rows = conn.execute(_CLAIM_AT_ONCE, params).all()
    more = len(rows) > limit  # a row past the limit: more is due
    deliveries: list[ClaimedDelivery] = []
    exhausted: list[int] = []
    for picked, out_of_attempts, *columns, digest, data in rows:
        if out_of_attempts:
            exhausted.append(picked)
        elif columns[0] is None:  # left for the next claim (the limit, the bytes)
            more = True
        else:
            delivery = ClaimedDelivery(*columns)
            delivery.raw_digest, delivery.raw = digest, data
            deliveries.append(delivery)
    return Picked(deliveries, exhausted, more)


def _pick_due_in_two(
    conn: Connection,
    now: datetime,
    limit: int,
    max_bytes: int,
    max_attempts: int,
    lease: timedelta,
    skip_locked: bool,
) -> Picked:
    """SQLite (where nothing is a round trip): pick, then claim the picked."""
    query = _CLAIMABLE_SKIP_LOCKED if skip_locked else _CLAIMABLE
    claimed: list[int] = []
    exhausted: list[int] = []
    total = 0
    rows = conn.execute(query, {"now": now, "stale": now - lease, "limit": limit + 1}).all()
    # Every row read (limit + 1) may mean more beyond them, whatever was parked.
    more = len(rows) > limit
    for row in rows:
        if row.attempts >= max_attempts:
            exhausted.append(row.id)
            continue
        if len(claimed) == limit or (claimed and total + row.size > max_bytes):
            more = True
            break
        claimed.append(row.id)
        total += row.size
    return Picked(_claim_and_load(conn, claimed, now), exhausted, more)


def _claim_and_load(conn: Connection, ids: list[int], now: datetime) -> list[ClaimedDelivery]:
    """Claim `ids`: their deliveries, in that order, with a small message's bytes."""
    if not ids:
        return []
    params = {"ids": ids, "now": now}
    conn.execute(_CLAIM, params)
    found: dict[int, ClaimedDelivery] = {}
    for *columns, digest, data in conn.execute(_LOAD_CLAIMED, params):
        delivery = found[columns[0]] = ClaimedDelivery(*columns)
        delivery.raw_digest, delivery.raw = digest, data
    return [found[i] for i in ids if i in found]


def park_exhausted(session: Session, ids: list[int], now: datetime, max_attempts: int) -> int:
    """Park the deliveries among `ids` still queued and out of attempts (a worker that
    claimed them died each time), with `delivery.failed`; how many. Checked again here:
    on PostgreSQL another worker may have picked and parked them meanwhile."""
    if not ids:
        return 0
    parked = session.scalars(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.status == QUEUED, Delivery.attempts >= max_attempts)
        .values(
            status=FAILED,
            claimed_at=None,
            finished_at=now,
            reason=f"parked after {max_attempts} attempts: the worker stopped while "
            "processing it (a crash or a hang); see last_error for any error before",
        )
        .returning(Delivery.id),
        execution_options={"synchronize_session": False},
    ).all()
    if parked:
        for delivery in session.scalars(select(Delivery).where(Delivery.id.in_(parked))):
            emit_delivery(session, delivery, Event.DELIVERY_FAILED, now=now)
    return len(parked)


def load_large(session: Session, deliveries: list[ClaimedDelivery]) -> None:
    """Read the raw messages the claim left out (over `_SMALL_RAW`) into one `bytes`
    each, without the database driver's own copy of the whole value (SQLite would
    build one, 25 MB for a 25 MB message; psycopg would hold its hex text, 50 MB): by
    incremental blob I/O on SQLite, by slices on PostgreSQL. Outside the claim's
    transaction: on SQLite that one holds the write lock."""
    large: dict[str, list[ClaimedDelivery]] = {}
    for delivery in deliveries:
        if delivery.raw is None and delivery.raw_digest is not None:
            large.setdefault(delivery.raw_digest, []).append(delivery)
    for digest, waiting in large.items():
        size = session.execute(
            select(_RAW_DATA.size).where(_RAW_DATA.digest == digest)
        ).scalar_one()
        data = _read_large(session, digest, size)
        for delivery in waiting:
            delivery.raw = data


# By id alone, its status checked on the rows: with `status = 'queued'` in the WHERE,
# statistics gathered while nothing was queued had PostgreSQL read every queued delivery
# through the status index and filter them by id (7 ms a batch with 6,000 queued).
_LOCK_QUEUED = (
    select(*_COLUMNS)
    .where(in_list(_DELIVERIES.c.id, "ids"))
    .order_by(_DELIVERIES.c.id)
    .with_for_update()
)


def lock_queued(session: Session, ids: list[int]) -> dict[int, ClaimedDelivery]:
    """The deliveries still queued among `ids`, by id, locked until the transaction ends
    (PostgreSQL; in id order, so that two transactions wait rather than deadlock): a
    worker whose lease ran out and the one that took its claim over never both file one
    (one finished meanwhile stays locked too, and is left out). Their raw bytes stay
    unloaded: the apply step has the parsed message."""
    if not ids:
        return {}
    rows = session.connection().execute(_LOCK_QUEUED, {"ids": ids})
    locked = [ClaimedDelivery(*row) for row in rows]
    return {delivery.id: delivery for delivery in locked if delivery.status == QUEUED}


def _read_large(session: Session, digest: str, size: int) -> bytes:
    if session.get_bind().dialect.name != "sqlite":
        return read_bytea(session, "raw_messages", "data", digest, size)
    rowid_column = literal_column("rowid", type_=Integer)
    rowid = session.execute(select(rowid_column).where(RawMessage.digest == digest)).scalar_one()
    return read_blob(session, "raw_messages", "data", int(rowid))


# The outcome of a batch's filings, one statement for the batch on either backend: a
# pipelined executemany of one UPDATE per delivery cost ≈ 140 µs of the worker's CPU per
# filing on PostgreSQL, ≈ 80 µs on SQLite (docs/performance.md, session 7). The rows are
# locked already (`lock_queued`). No plan (a refusal): NULL, which keeps the plan and the
# note of an earlier filing of a retried delivery, as the ORM's update of changed fields
# did. The plan is bound as its JSON text (`CleanJSONText`), as the JSON type stores it.
_PLAN_TEXT = CleanJSONText()
# PostgreSQL: each column of the batch bound as the text of an array (`listbind.ArrayText`:
# status and reason through `CleanString`), spread back into rows by `unnest`.
_FINISH_POSTGRESQL = text(
    "UPDATE deliveries SET status = v.status, reason = v.reason, claimed_at = NULL, "
    "last_error = NULL, finished_at = :now, "
    "note_id = coalesce(v.note_id, deliveries.note_id), "
    "plan = coalesce(v.plan, deliveries.plan) "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:statuses AS varchar[]), "
    "CAST(:reasons AS text[]), CAST(:notes AS integer[]), CAST(:plans AS json[])) "
    "AS v(id, status, reason, note_id, plan) "
    "WHERE deliveries.id = v.id"
).bindparams(
    bindparam("now", type_=_D.finished_at.type),
    bindparam("ids", type_=ArrayText(_D.id.type)),
    bindparam("statuses", type_=ArrayText(_D.status.type)),
    bindparam("reasons", type_=ArrayText(_D.reason.type)),
    bindparam("notes", type_=ArrayText(_D.note_id.type)),
    bindparam("plans", type_=ArrayText(_PLAN_TEXT)),
)
# SQLite: the batch as one JSON array of [id, status, reason, note, plan text] rows,
# read by `json_each` (its JSON functions are C; SQLAlchemy's executemany bound and
# encoded each row in Python).
_FINISH_SQLITE = text(
    "UPDATE deliveries SET status = json_extract(v.value, '$[1]'), "
    "reason = json_extract(v.value, '$[2]'), claimed_at = NULL, last_error = NULL, "
    "finished_at = :now, "
    "note_id = coalesce(json_extract(v.value, '$[3]'), deliveries.note_id), "
    "plan = coalesce(json_extract(v.value, '$[4]'), deliveries.plan) "
    "FROM json_each(:rows) AS v "
    "WHERE deliveries.id = json_extract(v.value, '$[0]')"
).bindparams(bindparam("now", type_=_D.finished_at.type))


def finish_deliveries(session: Session, deliveries: list[ClaimedDelivery], now: datetime) -> None:
    """Write the outcome of finished deliveries (status, reason, note, plan)."""
    if not deliveries:
        return
    notes = [d.note_id if d.plan is not None else None for d in deliveries]
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        columns = {
            "ids": [d.id for d in deliveries],
            "statuses": [d.status for d in deliveries],
            "reasons": [d.reason for d in deliveries],
            "notes": notes,
            "plans": [d.plan for d in deliveries],
        }
        session.execute(_FINISH_POSTGRESQL, {"now": now, **columns})
        return
    status, reason, plan = (
        _bind_processor(t, dialect) for t in (_D.status.type, _D.reason.type, _PLAN_TEXT)
    )
    rows = [
        [d.id, status(d.status), reason(d.reason), note, plan(d.plan)]
        for d, note in zip(deliveries, notes, strict=True)
    ]
    # Not ASCII-escaped: text that sqlite3 cannot encode (a lone surrogate) fails as a
    # bound value would, rather than being stored as JSON's escape of it.
    rows_text = json.dumps(rows, ensure_ascii=False)
    session.execute(_FINISH_SQLITE, {"now": now, "rows": rows_text})


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """The column type's own processing of a bound value (`CleanString`'s scrub and cut)."""
    found = type_._cached_bind_processor(dialect)
    assert found is not None, type_
    return found


def unclaim(session: Session, ids: list[int]) -> None:
    """Give back claims that were not tried after all (the attempt does not count)."""
    if ids:
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == QUEUED)
            .values(claimed_at=None, attempts=Delivery.attempts - 1),
            execution_options={"synchronize_session": False},
        )


def release_claim(session: Session, delivery_id: int, *, due: datetime) -> None:
    """The least a failed attempt must leave behind: the delivery claimable again (when
    recording the failure itself failed, it would otherwise wait for the lease)."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == QUEUED)
        .values(claimed_at=None, next_attempt_at=due),
        execution_options={"synchronize_session": False},
    )


def release_claims(session: Session) -> int:
    """Free every claim: for a starting worker on SQLite, where only one ever runs, so
    any claim is the previous (crashed) one's. The attempts stay counted."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.status == QUEUED, Delivery.claimed_at.is_not(None))
        .values(claimed_at=None),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def record_failure(
    session: Session,
    delivery_id: int,
    error: str,
    *,
    summary: str,
    immediate: bool = False,
    park: bool = False,
    now: datetime,
    max_attempts: int,
    retry_base: float,
) -> str:
    """Record a failed attempt: retry later with exponential backoff, or park it.

    `error` is the traceback (kept in last_error), `summary` the one line a user reads;
    `immediate`: an expected race (a unique key another worker just took) is retried
    at once, yet still counted, so that a persistent one is parked all the same.
    """
    delivery = session.get(Delivery, delivery_id)
    if delivery is None:
        return "gone"
    delivery.claimed_at = None  # the attempt was counted when it was claimed
    delivery.last_error = error[-4000:]
    if park or delivery.attempts >= max_attempts:  # park: trying again cannot help
        delivery.status = FAILED
        delivery.reason = f"parked after {delivery.attempts} attempts: {summary}"
        delivery.finished_at = now
        emit_delivery(session, delivery, Event.DELIVERY_FAILED, now=now)
    else:
        delay = 0.0 if immediate else retry_base * (2 ** (delivery.attempts - 1))
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        delivery.reason = f"attempt {delivery.attempts} failed; retrying in {delay:g}s"
    return delivery.status


def retry(session: Session, delivery_id: int, *, now: datetime) -> Delivery:
    """Put a parked (or any finished) delivery back in the queue, due now."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.raw_digest is None:
        raise LookupError(f"no retryable delivery #{delivery_id}")
    delivery.status = QUEUED
    delivery.attempts = 0
    delivery.claimed_at = None
    delivery.next_attempt_at = now
    delivery.finished_at = None
    delivery.reason = "queued again by retry"
    return delivery


def retry_all_failed(session: Session, *, now: datetime) -> int:
    result = session.execute(
        update(Delivery)
        .where(Delivery.status == FAILED)
        .values(status=QUEUED, attempts=0, claimed_at=None, next_attempt_at=now, finished_at=None)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# Finished for good: a parked (failed) delivery keeps its bytes, it may be retried.
_DONE = (
    DeliveryStatus.FILED,
    DeliveryStatus.DUPLICATE,
    DeliveryStatus.NO_CONTACT,
    DeliveryStatus.TASK_ONLY,
    DeliveryStatus.REJECTED,
)


def purge_raw(session: Session, *, before: datetime, limit: int = 500) -> int:
    """Forget the raw bytes of up to `limit` deliveries finished before `before`.

    The note, its links and the processing record stay; a raw message still referred
    to by another delivery (queued, parked or recent) stays too. How many deliveries
    let go of their bytes (call again until 0).
    """
    rows = session.execute(
        select(Delivery.id, Delivery.raw_digest)
        .where(
            Delivery.raw_digest.is_not(None),
            Delivery.status.in_(_DONE),
            Delivery.finished_at < before,
        )
        .limit(limit)
    ).all()
    if not rows:
        return 0
    session.execute(
        update(Delivery).where(Delivery.id.in_([r.id for r in rows])).values(raw_digest=None),
        execution_options={"synchronize_session": False},
    )
    digests = {r.raw_digest for r in rows}
    still_used = select(Delivery.id).where(Delivery.raw_digest == RawMessage.digest).exists()
    session.execute(
        delete(RawMessage).where(RawMessage.digest.in_(digests), ~still_used),
        execution_options={"synchronize_session": False},
    )
    return len(rows)
