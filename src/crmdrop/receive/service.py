"""The receive core, plain synchronous functions the protocol shells wrap.

Cheap checks first — at RCPT, is the recipient a live dropbox (and who owns it);
at end of DATA, may this author send to it — then the raw bytes and envelope are
committed to the inbound queue, and only then is a 2xx returned. Any fault of
ours becomes a 4xx, never a 5xx (DESIGN step 1). The worker checks the sender
again (authoritative).

Accepting is split in two so that the SMTP shell can *group-commit*: `prepare`
is CPU only (headers, sender check); `commit` stores any number of prepared
messages in one transaction, so concurrent sessions share one fsync.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection

from crmdrop.config import Settings
from crmdrop.dropbox.address import parse_dropbox_address, redact
from crmdrop.dropbox.plan import DropboxKind, UserInfo
from crmdrop.dropbox.sender_auth import AuthVerdict, upstream_verdict
from crmdrop.dropbox.senders import check_sender
from crmdrop.mail.headers import HeaderSummary, read_header_summary
from crmdrop.receive.authcheck import dns_verdict
from crmdrop.spool import Spool
from crmdrop.store.accounts import (
    Recipient,
    dropbox_owner,
    record_revoked_attempt,
    revoked_owner,
)
from crmdrop.store.db import NO_LOCK_WAIT, Database, LockBusy, pipelined
from crmdrop.store.directory import OwnerCache
from crmdrop.store.inbound import (
    NewDelivery,
    add_deliveries,
    claim_intake_key,
    intake_key_seen,
    reject_at_intake,
)
from crmdrop.store.signals import QUEUE, Waker, notify, wake_path

log = logging.getLogger(__name__)

OK_RCPT = "250 2.1.5 OK"
UNKNOWN = "550 5.1.1 No such dropbox here: check the address, or it was regenerated"
TOO_BIG = "552 5.3.4 Message too big for this dropbox"
TEMPFAIL = "451 4.3.0 Temporary failure on our side, please try again later"
TOO_MANY = "452 4.5.3 Too many recipients"
DUPLICATE = "250 2.0.0 OK: already queued"


@dataclass(frozen=True)
class Rcpt:
    """A recipient that passed the RCPT check, with its owner as read then."""

    address: str
    kind: DropboxKind
    owner: Recipient
    info: UserInfo


def same_dropbox(a: Rcpt, b: Rcpt) -> bool:
    """Two spellings of one dropbox (case, +tag): one delivery, not two."""
    return a.owner.user_id == b.owner.user_id and a.kind == b.kind


@dataclass(frozen=True)
class Verdict:
    """One reply line per recipient, in RCPT order (LMTP needs them all)."""

    replies: list[str]
    delivery_ids: list[int]

    def smtp_reply(self) -> str:
        """The single SMTP reply: 250 when any recipient took it, else the first refusal."""
        accepted = [r for r in self.replies if r.startswith("250")]
        if accepted:
            return accepted[0]
        temporary = [r for r in self.replies if r.startswith("4")]
        return temporary[0] if temporary else self.replies[0]


@dataclass
class Prepared:
    """A message checked and ready to store: one row per recipient, accepted or refused."""

    raw: Spool  # read back in chunks by the commit (past the threshold: from a file)
    rows: list[tuple[NewDelivery, str | None]]  # (row, refusal) — refusal None: accepted
    message_id: str | None
    mail_from: str
    protocol: str
    replies: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    # (source, key) of a non-SMTP intake, stored with the deliveries: seen before → DUPLICATE
    key: tuple[str, str] | None = None


class HeldConnection:
    """One write connection kept by one thread (the group commit's writer, or the event
    loop) for all its transactions: no pool checkout, reset (a ROLLBACK) and checkin per
    commit. Dropped on any failure but a busy lock at `BEGIN`, so that the next
    transaction starts on a fresh connection (the database may have restarted under it)."""

    def __init__(self, db: Database, *, wait_for_lock: bool = True) -> None:
        self.db = db
        self.wait_for_lock = wait_for_lock  # False (SQLite): `LockBusy` if it is held
        self._conn: Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        if self._conn is None:
            conn = self.db.write_engine.connect()
            if not self.wait_for_lock:
                conn = conn.execution_options(**{NO_LOCK_WAIT: True})
            self._conn = conn
        try:
            begun = self._conn.begin()
        except LockBusy:
            raise  # no transaction began: the connection is as good as it was
        except BaseException:
            self.close()
            raise
        try:
            with begun:
                yield self._conn
        except BaseException:
            self.close()
            raise

    @property
    def is_open(self) -> bool:
        """Whether a connection is held (the next transaction opens none)."""
        return self._conn is not None

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


class Receiver:
    """Checks and enqueues; shared by the SMTP and LMTP servers and `crmdrop ingest`."""

    def __init__(self, db: Database, settings: Settings, cache: OwnerCache | None = None) -> None:
        self.db = db
        self.settings = settings
        self.cache = cache
        # SQLite: the worker's wake-up socket, poked after each commit (PostgreSQL: NOTIFY).
        self.wake = Waker(wake_path(db.sqlite_file)) if db.sqlite_file is not None else None

    def held_connection(self) -> HeldConnection | None:
        """A connection for one thread's commits (`commit(..., held)`)."""
        return HeldConnection(self.db)

    def quick_connection(self) -> HeldConnection | None:
        """A connection for commits on the event loop itself (`try_commit`): SQLite only,
        where a commit is a local write and an fsync, no round trips; it never waits
        for the write lock. None on PostgreSQL: there every commit goes to a thread."""
        if not self.db.is_sqlite:
            return None
        return HeldConnection(self.db, wait_for_lock=False)

    def cached_recipient(self, address: str) -> tuple[str, Rcpt | None] | None:
        """RCPT from memory (no I/O to speak of: safe on the event loop), or None when
        the database must be asked (`check_recipient`, in a thread)."""
        parsed = parse_dropbox_address(address, self.settings.domain)
        if parsed is None:
            return UNKNOWN, None
        if self.cache is None:
            return None
        token, kind = parsed
        found = self.cache.get(token)
        if found is None:
            return None
        owner, info = found
        return OK_RCPT, Rcpt(address=address, kind=kind, owner=owner, info=info)

    def check_recipient(
        self, address: str, *, mail_from: str = "", peer: str = ""
    ) -> tuple[str, Rcpt | None]:
        """RCPT time: is `address` a live dropbox? (SPEC §2.2, §2.3, §7.1)

        A refused address whose token was regenerated is recorded for its owner to see.
        """
        parsed = parse_dropbox_address(address, self.settings.domain)
        if parsed is None:
            return UNKNOWN, None
        token, kind = parsed
        generation = self.cache.generation() if self.cache is not None else 0
        with self.db.read_connection() as conn:
            found = dropbox_owner(conn, token)
            revoked = revoked_owner(conn, token) if found is None else None
        if found is None:
            log.info("RCPT to unknown or revoked dropbox %s", redact(address))
            if revoked is not None:
                with self.db.write_connection() as conn:
                    record_revoked_attempt(
                        conn, revoked, rcpt_to=address, mail_from=mail_from, peer=peer
                    )
            return UNKNOWN, None
        if self.cache is not None:
            self.cache.remember(token, found, generation)
        owner, info = found
        return OK_RCPT, Rcpt(address=address, kind=kind, owner=owner, info=info)

    def intake_key_seen(self, key: tuple[str, str]) -> bool:
        """Was this (source, key) already queued? (A replayed webhook, an IMAP re-read.)"""
        with self.db.read_connection() as conn:
            return intake_key_seen(conn, *key)

    def _authenticate(
        self,
        summary: HeaderSummary,
        raw: Spool,
        *,
        author: str | None,
        mail_from: str,
        peer: str,
        helo: str | None,
    ) -> AuthVerdict | None:
        """The SPF/DKIM/DMARC verdict on the author's domain, if a source is configured."""
        settings = self.settings
        if settings.sender_auth == "upstream" and settings.upstream_authserv:
            return upstream_verdict(summary.headers, settings.upstream_authserv, author)
        if settings.sender_auth == "dns":
            return dns_verdict(
                raw.getvalue(),  # DKIM hashes the body: the one place it is read whole
                ip=peer,
                helo=helo,
                mail_from=mail_from,
                author=author,
                authserv_id=settings.smtp_hostname,
                timeout=settings.dns_timeout,
            )
        return None

    def prepare(
        self,
        *,
        mail_from: str,
        rcpts: list[Rcpt],
        raw: Spool,
        protocol: str,
        peer: str,
        helo: str | None = None,
    ) -> Prepared:
        """End of DATA, before storing: the sender check per recipient.

        With `sender_auth = dns` this waits on DNS: call it off the event loop then.
        """
        summary = read_header_summary(raw.head())  # the header block only, not the body
        author = next((m.address for m in summary.from_ if m.address), None)
        recipients = [m.address for m in [*summary.to, *summary.cc] if m.address]
        auth = self._authenticate(
            summary, raw, author=author, mail_from=mail_from, peer=peer, helo=helo
        )
        auth_failure = (
            f"the author's domain failed sender authentication: {auth.detail}"
            if auth is not None and auth.failed
            else None
        )
        rows: list[tuple[NewDelivery, str | None]] = []
        for rcpt in rcpts:
            new = NewDelivery(
                account_id=rcpt.owner.account_id,
                user_id=rcpt.owner.user_id,
                dropbox_kind=rcpt.kind.value,
                rcpt_to=rcpt.address,
                mail_from=mail_from,
                protocol=protocol,
                peer=peer,
                message_id=summary.message_id,
                subject=summary.subject,
                author=author or "",
                sender_auth=auth.detail if auth is not None else "",
            )
            verdict = check_sender(author, recipients, rcpt.info, auth_failure=auth_failure)
            rows.append((new, None if verdict.allowed else verdict.detail))
        return Prepared(raw, rows, summary.message_id, mail_from, protocol)

    def commit(self, batch: list[Prepared], held: HeldConnection | None = None) -> None:
        """Store every prepared message in one transaction; fill in their replies.

        Only after the commit returns do the replies say 250. Should the shared
        transaction fail, each message is tried in a transaction of its own, so one
        bad message cannot make the others fail; one that fails alone gets 451
        (nothing of it was stored: its sender retries). `held`: the writer thread's
        own connection; a failure on it is tried again on a pooled one.
        """
        try:
            self._store(batch, held)
        except Exception:
            if len(batch) > 1 or held is not None:
                log.warning("a group commit of %d failed; committing one by one", len(batch))
                for item in batch:
                    self.commit([item])
                return
            log.exception("could not queue a message from %s", batch[0].mail_from)
            item = batch[0]
            item.replies, item.ids = [TEMPFAIL] * len(item.rows), []
            return
        self._committed(batch)

    def try_commit(self, batch: list[Prepared], quick: HeldConnection) -> bool:
        """One attempt to store `batch` in one transaction on `quick` (see
        `quick_connection`): True once committed, its replies filled in. False if it was
        not (the write lock held elsewhere, or any failure: nothing of it stored), for
        the caller to `commit` it where waiting and retrying is allowed."""
        try:
            self._store(batch, quick)
        except LockBusy:
            return False
        except Exception as exc:
            log.info("a group commit on the event loop failed (%s); it goes to the thread", exc)
            return False
        self._committed(batch)
        return True

    def _committed(self, batch: list[Prepared]) -> None:
        """After a commit: wake the worker (SQLite), log each message."""
        if self.wake is not None:
            self.wake.poke()
        if not log.isEnabledFor(logging.INFO):
            return  # the reply lines joined for nobody: a cost per message
        for item in batch:
            log.info(
                "%s from %s via %s: %s",
                item.message_id,
                item.mail_from,
                item.protocol,
                "; ".join(item.replies),
            )

    def _store(self, batch: list[Prepared], held: HeldConnection | None = None) -> None:
        now = datetime.now(UTC)
        transaction = held.transaction() if held is not None else self.db.write_connection()
        with transaction as conn:
            fresh = [item for item in batch if _first_time(conn, item, now)]
            queued = [
                (new, item.raw) for item in fresh for new, refusal in item.rows if refusal is None
            ]
            # Only our own statements in the pipeline (SQLAlchemy's want their answers):
            # for SMTP the whole transaction, BEGIN included, in two round trips.
            spooled = any(raw.on_disk for _, raw in queued)  # streamed by COPY
            with pipelined(conn, copies=spooled):
                if not self.db.is_sqlite:
                    notify(conn, QUEUE)  # wakes the workers when this commits
                ids = iter(add_deliveries(conn, queued, now=now))
            for item in fresh:
                for new, refusal in item.rows:
                    if refusal is None:
                        delivery_id = next(ids)
                        item.ids.append(delivery_id)
                        item.replies.append(f"250 2.0.0 OK: queued as {delivery_id}")
                    else:
                        reject_at_intake(conn, new, refusal, now=now)
                        item.replies.append(f"550 5.7.1 {_one_line(refusal)}")

    def accept(
        self,
        *,
        mail_from: str,
        rcpts: list[Rcpt],
        raw: bytes,
        protocol: str,
        peer: str,
        key: tuple[str, str] | None = None,
    ) -> Verdict:
        """Prepare and commit one message on its own (pipe, HTTP and IMAP intake).

        `key`: see `Prepared.key` (already stored → every reply is DUPLICATE).
        """
        if len(raw) > self.settings.max_message_size:
            return Verdict([TOO_BIG] * len(rcpts), [])
        try:
            prepared = self.prepare(
                mail_from=mail_from, rcpts=rcpts, raw=Spool.of(raw), protocol=protocol, peer=peer
            )
        except Exception:
            log.exception("could not check a message from %s", mail_from)
            return Verdict([TEMPFAIL] * len(rcpts), [])
        prepared.key = key
        self.commit([prepared])
        return Verdict(prepared.replies, prepared.ids)


def _first_time(conn: Connection, item: Prepared, now: datetime) -> bool:
    """Reset `item`'s replies; False (every reply DUPLICATE) when its intake key was
    stored before: a replayed webhook, an IMAP message read again."""
    item.replies, item.ids = [], []
    if item.key is not None and not claim_intake_key(conn, *item.key, now=now):
        item.replies = [DUPLICATE] * len(item.rows)
        return False
    return True


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]
