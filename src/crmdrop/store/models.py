"""The CRM and queue tables. One database holds both, so filing a message and
marking its delivery done commit together (DESIGN "The inbound queue is a table").

Addresses are stored normalized (`crmdrop.mail.addresses.normalize_address`) so
lookups are exact-match on an index, case-insensitive by construction.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from enum import StrEnum
from itertools import chain
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    update,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    deferred,
    mapped_column,
    relationship,
)
from sqlalchemy.types import TypeDecorator

from crmdrop.store.signals import DIRECTORY, notify


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored")
        # SQLite keeps the wall time and drops the offset: store the UTC instant.
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


class CleanString(TypeDecorator[str]):
    """A string as PostgreSQL will store it: no NUL character, cut to the column's length.

    SQLite takes both, so without this the two backends would disagree, and mail that a
    decoder turned into such text would fail on PostgreSQL only (and be retried forever).
    """

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        if value is None:
            return None
        length = getattr(self.impl, "length", None)
        clean: str = _scrub(value)
        return clean[:length] if length else clean


class CleanText(CleanString):
    impl = Text
    cache_ok = True  # not inherited: SQLAlchemy reads it from the class itself


class CleanJSON(TypeDecorator[Any]):
    """JSON without NUL characters anywhere in it (see CleanString)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: object) -> Any:
        return _scrub_json(value)


def _scrub_json(value: Any) -> Any:
    """`_scrub` for a JSON value, without its walk (which rebuilds every dict and list:
    the worker binds a plan of a few hundred items per filing) when the value has no NUL:
    JSON writes one as the escape \\u0000 (a text with that escape written out only
    takes the walk, which finds nothing)."""
    try:
        if "\\u0000" not in json.dumps(value):
            return value
    except (TypeError, ValueError):  # not JSON as it is: the walk, then the JSON type
        pass
    return _scrub(value)


class CleanJSONText(TypeDecorator[Any]):
    """A JSON value bound as its text (`CleanJSON`'s, NUL-free), for a statement that
    casts it itself: the plans of a batch's deliveries bound as one array
    (`store.inbound.finish_deliveries`). The text is encoded once, and walked only when
    it has the escape of a NUL."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: object) -> str | None:
        if value is None:
            return None
        encoded = json.dumps(value)
        return json.dumps(_scrub(value)) if "\\u0000" in encoded else encoded


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """The model's Core table, typed: `insert(Model)` would take the ORM's bulk path,
    and `Model.__table__` is typed as a `FromClause`."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(CleanString(200), unique=True)
    file_under_companies: Mapped[bool] = mapped_column(Boolean, default=False)
    discard_automated: Mapped[bool] = mapped_column(Boolean, default=True)
    next_case_ref: Mapped[int] = mapped_column(Integer, default=1)
    next_opp_ref: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Role(StrEnum):
    """What a user may do in their account (SPEC §7.3): the first user is its admin."""

    ADMIN = "admin"
    MEMBER = "member"


class TokenKind(StrEnum):
    """What a one-time emailed link is for."""

    RESET = "reset"  # set a new password
    INVITE = "invite"  # an invited colleague sets their first password
    ADDRESS = "address"  # validate an additional address


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    email: Mapped[str] = mapped_column(CleanString(320), unique=True)  # signup address
    name: Mapped[str] = mapped_column(CleanString(200))
    password_hash: Mapped[str | None] = mapped_column(CleanString(200), nullable=True)
    timezone: Mapped[str] = mapped_column(CleanString(64), default="UTC")
    token: Mapped[str] = mapped_column(CleanString(64), unique=True)
    accept_reply_all: Mapped[bool] = mapped_column(Boolean, default=True)
    role: Mapped[str] = mapped_column(CleanString(16), default=Role.MEMBER)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped when the password changes or the user is deactivated: older sessions end.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DirectoryVersion(Base):
    """One row, bumped in the transaction of every change to users or their addresses:
    the processes that answer RCPT from memory see it and forget what they knew
    (`store/directory.py`)."""

    __tablename__ = "directory_version"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class UserToken(Base):
    """A one-time link's token: only its SHA-256 is kept; used once, before `expires_at`."""

    __tablename__ = "user_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(CleanString(16))
    token_hash: Mapped[str] = mapped_column(CleanString(64), unique=True)
    address: Mapped[str | None] = mapped_column(CleanString(320), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class LoginFailure(Base):
    """One failed login, keyed by `ip:ADDR` or `user:EMAIL`: the throttle counts recent rows."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(CleanString(400))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class RevokedToken(Base):
    """A dropbox token replaced by Regenerate (SPEC §2.3): refused, but known, at RCPT."""

    __tablename__ = "revoked_tokens"
    token: Mapped[str] = mapped_column(CleanString(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RevokedAttempt(Base):
    """Someone sent to a revoked dropbox address; shown under Regenerate."""

    __tablename__ = "revoked_attempts"
    __table_args__ = (Index("ix_revoked_attempts_user_at", "user_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    rcpt_to: Mapped[str] = mapped_column(CleanString(320))
    mail_from: Mapped[str] = mapped_column(CleanString(320))
    peer: Mapped[str] = mapped_column(CleanString(100), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class UserAddress(Base):
    """An additional address of a user (SPEC §1.2); it counts as theirs at once."""

    __tablename__ = "user_addresses"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    email: Mapped[str] = mapped_column(CleanString(320), unique=True)
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Exclusion(Base):
    """An exclusion-list entry: an exact address or `@domain` (SPEC §1.3)."""

    __tablename__ = "exclusions"
    __table_args__ = (UniqueConstraint("account_id", "pattern"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    pattern: Mapped[str] = mapped_column(CleanString(320))


class Company(Base):
    __tablename__ = "companies"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(CleanString(200))
    domain: Mapped[str | None] = mapped_column(CleanString(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (Index("ix_companies_account_domain", "account_id", "domain"),)


class CompanyEmail(Base):
    __tablename__ = "company_emails"
    __table_args__ = (UniqueConstraint("account_id", "email"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"), index=True)
    email: Mapped[str] = mapped_column(CleanString(320))


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    # Indexed by ix_contacts_account_activity, which begins with it (0013).
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    name: Mapped[str] = mapped_column(CleanString(200))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), nullable=True)
    created_by_delivery_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When a note was last filed under it (else its creation): the contacts list's order,
    # kept here because a MAX over a million notes per page would be too slow.
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (
        Index("ix_contacts_account_activity", "account_id", "last_activity_at", "id"),
        Index("ix_contacts_created_by", "created_by_delivery_id"),
        Index("ix_contacts_company", "company_id"),
    )


class ContactEmail(Base):
    __tablename__ = "contact_emails"
    __table_args__ = (UniqueConstraint("account_id", "email"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id"), index=True)
    email: Mapped[str] = mapped_column(CleanString(320))


contact_terms = Table(
    "contact_terms",
    Base.metadata,
    Column("account_id", Integer, primary_key=True),
    Column("term", CleanString(320), primary_key=True),
    Column("contact_id", Integer, primary_key=True),
    Index("ix_contact_terms_contact_term", "contact_id", "term"),
)
"""The contacts search index (see crmdrop.store.search). No foreign keys (migration 0013):
it is derived from the contacts — written with a contact, deleted before it
(`store.contacts`), rebuilt by `reindex_contact` — and a new contact writes several rows,
each of which would cost two foreign-key checks on the filing path."""

note_contacts = Table(
    "note_contacts",
    Base.metadata,
    Column("note_id", ForeignKey("notes.id"), primary_key=True),
    Column("contact_id", ForeignKey("contacts.id"), primary_key=True),
    # A contact's timeline reads (contact, note) pairs from the index alone; it also
    # serves every look-up by contact (a second index on contact_id alone, dropped by
    # migration 0013, cost each link an index entry more).
    Index("ix_note_contacts_contact_note", "contact_id", "note_id"),
)
note_companies = Table(
    "note_companies",
    Base.metadata,
    Column("note_id", ForeignKey("notes.id"), primary_key=True),
    Column("company_id", ForeignKey("companies.id"), primary_key=True, index=True),
)
note_cases = Table(
    "note_cases",
    Base.metadata,
    Column("note_id", ForeignKey("notes.id"), primary_key=True),
    Column("case_id", ForeignKey("cases.id"), primary_key=True, index=True),
)
note_opportunities = Table(
    "note_opportunities",
    Base.metadata,
    Column("note_id", ForeignKey("notes.id"), primary_key=True),
    Column("opportunity_id", ForeignKey("opportunities.id"), primary_key=True, index=True),
)
case_contacts = Table(
    "case_contacts",
    Base.metadata,
    Column("case_id", ForeignKey("cases.id"), primary_key=True),
    Column("contact_id", ForeignKey("contacts.id"), primary_key=True),
    Index("ix_case_contacts_contact", "contact_id"),
)
opportunity_contacts = Table(
    "opportunity_contacts",
    Base.metadata,
    Column("opportunity_id", ForeignKey("opportunities.id"), primary_key=True),
    Column("contact_id", ForeignKey("contacts.id"), primary_key=True),
    Index("ix_opportunity_contacts_contact", "contact_id"),
)
task_contacts = Table(
    "task_contacts",
    Base.metadata,
    Column("task_id", ForeignKey("tasks.id"), primary_key=True),
    Column("contact_id", ForeignKey("contacts.id"), primary_key=True),
    Index("ix_task_contacts_contact", "contact_id"),
)


class Note(Base):
    """A filed email (SPEC §4.4). `message_key` makes filing exactly-once per account."""

    __tablename__ = "notes"
    __table_args__ = (
        # Threads and duplicates are looked up by message_key (no index on message_id:
        # nothing reads notes by it, migration 0013).
        UniqueConstraint("account_id", "message_key"),
        Index("ix_notes_delivery", "delivery_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"))
    message_key: Mapped[str] = mapped_column(CleanString(512))
    message_id: Mapped[str | None] = mapped_column(CleanString(512), nullable=True)
    subject: Mapped[str] = mapped_column(CleanText)
    body: Mapped[str] = mapped_column(CleanText)
    own_text: Mapped[str] = mapped_column(CleanText, default="")
    author_name: Mapped[str] = mapped_column(CleanString(320))
    author_email: Mapped[str | None] = mapped_column(CleanString(320), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    direction: Mapped[str] = mapped_column(CleanString(16))
    is_forward: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The messages a forwarded thread carries, newest first (`ChainMessage.to_json`).
    chain: Mapped[list[dict[str, object]] | None] = mapped_column(CleanJSON, nullable=True)


class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    note_id: Mapped[int] = mapped_column(ForeignKey("notes.id"), index=True)
    filename: Mapped[str] = mapped_column(CleanString(500))
    content_type: Mapped[str] = mapped_column(CleanString(200))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary))


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("account_id", "ref_no"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    ref_no: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(CleanText)
    status: Mapped[str] = mapped_column(CleanString(32), default="open")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_by_delivery_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Opportunity(Base):
    __tablename__ = "opportunities"
    __table_args__ = (UniqueConstraint("account_id", "ref_no"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    ref_no: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(CleanText)
    status: Mapped[str] = mapped_column(CleanString(32), default="open")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_by_delivery_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Task(Base):
    __tablename__ = "tasks"
    # One task per message per user and kind: two workers filing the same message at once
    # (PostgreSQL) must not both make one; a task-only message has no note to dedupe on.
    __table_args__ = (
        UniqueConstraint(
            "account_id", "user_id", "message_key", "due_kind", name="uq_tasks_message"
        ),
        Index("ix_tasks_user_done", "user_id", "done", "due_date"),
        Index("ix_tasks_note", "note_id"),
        Index("ix_tasks_delivery", "delivery_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"))
    note_id: Mapped[int | None] = mapped_column(ForeignKey("notes.id"), nullable=True)
    message_key: Mapped[str] = mapped_column(CleanString(512))
    title: Mapped[str] = mapped_column(CleanText)
    description: Mapped[str] = mapped_column(CleanText)
    due_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    due_kind: Mapped[str] = mapped_column(CleanString(16))
    timezone: Mapped[str] = mapped_column(CleanString(64))
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RawMessage(Base):
    """The bytes of one accepted message, stored once however many dropboxes it reached.

    Keyed by the SHA-256 of the bytes: a message to fifty dropboxes is one row (with
    25 MB messages and 50 recipients, one per delivery would write 1.25 GB at once).
    """

    __tablename__ = "raw_messages"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Last (migration 0010): SQLite then writes its zeroblob without building it in memory.
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary))


class Delivery(Base):
    """The inbound queue *and* the processing record of one message to one dropbox.

    status: queued → filed | duplicate | no_contact | task_only | failed (parked);
    `rejected` rows record a message refused at end of DATA (no raw kept). The bytes
    live in `raw_messages`, shared by the deliveries of one message; the retention
    setting may delete them once filed (`raw_digest` is then None, the record stays).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        # The claim's order (due time, then id) is the index's: no sort of every queued
        # row for each batch (0013).
        Index("ix_deliveries_status_due", "status", "next_attempt_at", "id"),
        Index("ix_deliveries_account", "account_id", "id"),
        Index("ix_deliveries_user", "user_id", "id"),
        Index("ix_deliveries_note", "note_id"),
        # PostgreSQL: room on each page for the claim's new row version, a HOT update
        # (no indexed column changes) rather than a new entry in each index (0013).
        {"postgresql_with": {"fillfactor": 80}},
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    dropbox_kind: Mapped[str] = mapped_column(CleanString(16))
    rcpt_to: Mapped[str] = mapped_column(CleanString(320))
    mail_from: Mapped[str] = mapped_column(CleanString(320))  # envelope sender; "" for <>
    protocol: Mapped[str] = mapped_column(CleanString(16))
    peer: Mapped[str] = mapped_column(CleanString(100), default="")
    raw_digest: Mapped[str | None] = mapped_column(
        ForeignKey("raw_messages.digest"), nullable=True, index=True
    )
    raw_message: Mapped[RawMessage | None] = relationship(lazy="select")
    size: Mapped[int] = mapped_column(Integer)
    message_id: Mapped[str | None] = mapped_column(CleanString(512), nullable=True)
    subject: Mapped[str] = mapped_column(CleanText, default="")
    author: Mapped[str] = mapped_column(CleanString(320), default="")
    sender_auth: Mapped[str] = mapped_column(CleanString(500), default="")  # the verdict (§7.2)
    status: Mapped[str] = mapped_column(CleanString(16))
    reason: Mapped[str] = mapped_column(CleanText, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set when a worker takes it (and `attempts` counted then), cleared when it is done:
    # a claim a dead worker left behind is how a crash is seen (see store/inbound.py).
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(CleanText, nullable=True)
    plan: Mapped[dict[str, object] | None] = mapped_column(CleanJSON, nullable=True)
    note_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def raw(self) -> bytes | None:
        """The message as received; None for a refusal or once retention deleted it."""
        return self.raw_message.data if self.raw_message is not None else None


class DeliveryAction(Base):
    """Something a user did to a delivery from its page (undo, never-a-contact, retry):
    the processing record keeps what was decided *and* what was put right since."""

    __tablename__ = "delivery_actions"
    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(CleanString(32))
    detail: Mapped[str] = mapped_column(CleanText)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Outbox(Base):
    """A reply waiting for (or done with) the relay (SPEC §6.4)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_due", "status", "next_attempt_at"),
        Index("ix_outbox_user_created", "user_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id"), nullable=True)
    kind: Mapped[str] = mapped_column(CleanString(32))
    mail_to: Mapped[str] = mapped_column(CleanString(320))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(CleanString(16))  # queued | sent | failed | suppressed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(CleanText, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApiToken(Base):
    """A personal API token (docs/api.md). Only a SHA-256 of it is kept: it is 256 random
    bits, so a slow hash would add nothing but cost on every request."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(CleanString(200))
    token_hash: Mapped[str] = mapped_column(CleanString(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookEndpoint(Base):
    """Where an account's events go (docs/webhooks.md). The secret is kept as given out
    (`whsec_…`): signing needs it, so it cannot be hashed."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    url: Mapped[str] = mapped_column(CleanString(2000))
    secret: Mapped[str] = mapped_column(CleanString(100))
    events: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookMessage(Base):
    """One event for one endpoint: the webhook outbox. Queued in the transaction of the
    change it reports, so an event is sent if and only if the change committed."""

    __tablename__ = "webhook_messages"
    __table_args__ = (Index("ix_webhook_messages_status_due", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    event: Mapped[str] = mapped_column(CleanString(40))
    msg_id: Mapped[str] = mapped_column(CleanString(64))  # the `webhook-id` header
    body: Mapped[str] = mapped_column(CleanText)  # the exact bytes signed and sent
    status: Mapped[str] = mapped_column(CleanString(16))  # queued | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(CleanText, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookAttempt(Base):
    """One try at sending a webhook message: what the endpoint answered (or the error)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"))
    message_id: Mapped[int] = mapped_column(ForeignKey("webhook_messages.id"))
    event: Mapped[str] = mapped_column(CleanString(40))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(CleanText, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)


class IntakeKey(Base):
    """A message (or a signed request) a non-SMTP source already handed over.

    Written in the transaction that queues its deliveries, so a Mailgun token is
    used once and an IMAP message seen again after a crash is not queued twice.
    """

    __tablename__ = "intake_keys"
    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


_BUMP = update(DirectoryVersion).values(version=DirectoryVersion.version + 1)


@event.listens_for(Session, "before_flush")
def _directory_changed(session: Session, _context: object, _instances: object) -> None:
    """Any change to who owns which token or address makes every process forget what it
    remembered of the directory (`store/directory.py`), in the same transaction."""
    changed = chain(session.new, session.dirty, session.deleted)
    if not any(isinstance(obj, User | UserAddress) for obj in changed):
        return
    conn = session.connection()
    conn.execute(_BUMP)
    if conn.dialect.name == "postgresql":
        notify(conn, DIRECTORY)
