"""Carry a FilingPlan out inside the caller's transaction (DESIGN step 5).

Idempotent per account: a note is unique on (account, message_key); for a
message filed before, only links that are new are added (SPEC §6.2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Insert, Integer, String, Table, bindparam, insert, select, text, update
from sqlalchemy.orm import Session

from crmdrop.dropbox.plan import ContactAction, FilingPlan, Outcome, TaskAction
from crmdrop.mail.model import Attachment as MailAttachment
from crmdrop.mail.model import ParsedMessage
from crmdrop.store.accounts import AccountSettings
from crmdrop.store.blobs import fill_blob, insert_streamed_postgresql, zeroblob_insert
from crmdrop.store.copyrows import copy_rows
from crmdrop.store.inbound import ClaimedDelivery, finish_deliveries
from crmdrop.store.listbind import in_list
from crmdrop.store.models import (
    Account,
    Attachment,
    Base,
    Case,
    Contact,
    ContactEmail,
    Note,
    Opportunity,
    Task,
    case_contacts,
    contact_terms,
    note_cases,
    note_companies,
    note_contacts,
    note_opportunities,
    opportunity_contacts,
    table_of,
    task_contacts,
)
from crmdrop.store.search import contact_term_rows
from crmdrop.store.webhooks import Event, emit

_EMAILS = ContactEmail.__table__.c
_CONTACTS_OF = select(_EMAILS.email, _EMAILS.contact_id).where(
    _EMAILS.account_id == bindparam("account"),
    in_list(_EMAILS.email, "emails"),
)


_NOTES, _CONTACTS = table_of(Note), table_of(Contact)


_RESERVE = text(
    "SELECT 'notes', nextval(pg_get_serial_sequence('notes', 'id')) "
    "FROM generate_series(1, :notes) UNION ALL "
    "SELECT 'contacts', nextval(pg_get_serial_sequence('contacts', 'id')) "
    "FROM generate_series(1, :contacts)"
).columns(sa.column("kind", String), sa.column("id", Integer))


@dataclass
class BatchWrites:
    """What the filings of one transaction share: the contacts looked up by address, and
    the rows nothing reads back (links, addresses, search terms, the contacts' latest
    activity, the deliveries' outcome), written at the end by `finish` with one statement
    per table — on PostgreSQL every statement is a round trip. A unique key that another
    worker took meanwhile fails the transaction there, as it would have one statement
    earlier.

    `deferred`: the new notes and contacts are written at the end too, with ids taken
    beforehand for the whole batch (`reserve`), instead of an INSERT ... RETURNING id
    each — a statement per row, which on SQLite was most of the batch's statements.
    PostgreSQL takes them from the tables' sequences; SQLite, whose writer holds the
    database's write lock from its `BEGIN IMMEDIATE`, past the tables' highest id, as
    its own INSERT would."""

    # per account: address -> its contact (None: none), as this transaction knows it
    contacts: dict[int, dict[str, int | None]] = field(default_factory=dict)
    rows: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)
    finished: list[ClaimedDelivery] = field(default_factory=list)
    deferred: bool = False
    postgresql: bool = False  # sequences for the ids, COPY for the rows
    ids: dict[Table, list[int]] = field(default_factory=dict)  # reserved, not used yet
    top: dict[Table, int] = field(default_factory=dict)  # SQLite: the highest id taken
    links: dict[tuple[Table, str, int], set[int]] = field(default_factory=dict)  # waiting
    # the company of each contact this transaction created (its row may not be written)
    companies: dict[int, int | None] = field(default_factory=dict)

    @classmethod
    def deferring(cls, session: Session) -> BatchWrites:
        """Writes that wait for the batch's end, on the session's database."""
        return cls(deferred=True, postgresql=session.get_bind().dialect.name == "postgresql")

    def look_up(self, session: Session, account_id: int, addresses: Iterable[str]) -> int:
        """Find the contacts of these addresses, for the whole batch in one query; how
        many of them have none (the contacts to create)."""
        known = self.contacts.setdefault(account_id, {})
        asked = set(addresses)
        wanted = sorted(asked - known.keys())
        if wanted:
            known.update(dict.fromkeys(wanted))
            rows = session.execute(_CONTACTS_OF, {"account": account_id, "emails": wanted})
            known.update((row.email, row.contact_id) for row in rows)
        return sum(known[address] is None for address in asked)

    def reserve(self, session: Session, notes: int, contacts: int) -> None:
        """Take the ids of the batch's new notes and contacts: one statement on
        PostgreSQL, one per table on SQLite."""
        if not self.deferred or notes + contacts == 0:
            return
        if self.postgresql:
            found = session.execute(_RESERVE, {"notes": notes, "contacts": contacts})
            for name, value in found:
                self.ids.setdefault(_NOTES if name == "notes" else _CONTACTS, []).append(value)
        else:
            for table, count in ((_NOTES, notes), (_CONTACTS, contacts)):
                self.ids.setdefault(table, []).extend(self._past_top(session, table, count))
        for taken in self.ids.values():
            taken.sort(reverse=True)  # popped from the end: used in ascending order

    def _past_top(self, session: Session, table: Table, count: int) -> range:
        """SQLite: `count` ids past both the table's highest and those this batch took."""
        if count <= 0:
            return range(0)
        highest = session.scalar(select(sa.func.max(table.c.id))) or 0
        start = max(int(highest), self.top.get(table, 0)) + 1
        self.top[table] = start + count - 1
        return range(start, start + count)

    def _take_id(self, session: Session, table: Table) -> int:
        taken = self.ids.get(table)
        if taken:
            return taken.pop()
        if not self.postgresql:
            return self._past_top(session, table, 1)[0]
        sql = f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id'))"
        return int(session.execute(text(sql)).scalar_one())

    def insert(
        self, session: Session, model: type[Base], *, now: bool = False, **values: Any
    ) -> int:
        """A new row's id. `deferred`: the row is written by `finish`, or at once when
        `now` (rows that refer to it follow at once), with an id of the batch's."""
        if not self.deferred:
            return _insert(session, model, **values)
        table = table_of(model)
        row_id = self._take_id(session, table)
        if now:
            session.execute(_insert_rows(table), [{"id": row_id, **values}])
        else:
            self.add(table, [{"id": row_id, **values}])
        return row_id

    def add(self, table: Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.rows.setdefault(table, []).extend(rows)

    def link(self, table: Table, left: str, left_id: int, right: str, ids: list[int]) -> None:
        """Pairs of an association table to write, remembered by their left side."""
        self.add(table, [{left: left_id, right: i} for i in ids])
        self.links.setdefault((table, left, left_id), set()).update(ids)

    def pending(self, table: Table, left: str, left_id: int) -> set[int]:
        """The ids already waiting to be linked to `left_id` (a look-up, where a scan of
        the table's waiting rows for each link made the batch's links quadratic)."""
        return set(self.links.get((table, left, left_id), ()))

    def write_rows(self, session: Session) -> None:
        """Write the rows waiting so far, a statement per table, parents first (on
        PostgreSQL a binary COPY: `store.copyrows`)."""
        for table in sorted(self.rows, key=_table_order().__getitem__):
            rows = self.rows[table]
            if not (self.postgresql and copy_rows(session, table, rows)):
                session.execute(_insert_rows(table), rows)
        self.rows.clear()
        self.links.clear()

    def finish(self, session: Session, now: datetime) -> None:
        self.write_rows(session)
        _touch_contacts(session, sorted(self.touched), now)
        self.touched.clear()
        finish_deliveries(session, self.finished, now)
        self.finished.clear()


@cache
def _table_order() -> dict[Table, int]:
    """Each table's place in an order where a table comes after those it refers to."""
    return {table: i for i, table in enumerate(Base.metadata.sorted_tables)}


@cache
def _insert_rows(table: Table) -> Insert:
    """An executemany INSERT, built once per table. On PostgreSQL psycopg sends it as a
    pipeline: one round trip for the rows (a multi-row INSERT by SQLAlchemy's
    "insertmanyvalues" measured more CPU, psycopg parsing its long text, for no less wait)."""
    return insert(table)


def _link(
    session: Session,
    writes: BatchWrites,
    table: Table,
    left: str,
    left_id: int,
    right: str,
    ids: Iterable[int],
    *,
    fresh: bool = False,
) -> None:
    """Insert (at the batch's end) the (left_id, id) pairs of an association table that
    are not there yet (`fresh`: `left_id` was created in this transaction, so none are)."""
    wanted = set(ids)
    if not wanted:
        return
    have = writes.pending(table, left, left_id)
    if not fresh:
        have.update(
            session.scalars(
                select(table.c[right]).where(table.c[left] == left_id, table.c[right].in_(wanted))
            ).all()
        )
    writes.link(table, left, left_id, right, sorted(wanted - have))


_INSERTS: dict[type[Base], Any] = {}


def _insert(session: Session, model: type[Base], **values: Any) -> int:
    """A Core INSERT ... RETURNING id: no unit-of-work flush on the filing path.

    One statement per table, built once, so SQLAlchemy compiles it once."""
    statement = _INSERTS.get(model)
    if statement is None:
        table = table_of(model)
        statement = _INSERTS[model] = insert(table).returning(table.c.id)
    return int(session.execute(statement, values).scalar_one())


_TOUCH = (  # Core, not ORM: no bulk-update machinery for one statement per batch
    update(_CONTACTS)
    .where(in_list(_CONTACTS.c.id, "ids"))
    .where(_CONTACTS.c.last_activity_at < bindparam("now"))
    .values(last_activity_at=bindparam("now"))
)


def _touch_contacts(session: Session, contact_ids: list[int], now: datetime) -> None:
    """A note filed under contacts is their latest activity (the contacts list's order)."""
    if contact_ids:
        session.execute(_TOUCH, {"ids": contact_ids, "now": now})


def _next_ref(session: Session, account_id: int, kind: str) -> int:
    """The account's next case/opportunity number, taken atomically: a read-then-write
    would let two workers (PostgreSQL) take the same number."""
    column = Account.next_case_ref if kind == "case" else Account.next_opp_ref
    taken = session.execute(
        update(Account)
        .where(Account.id == account_id)
        .values({column: column + 1})
        .returning(column),
        execution_options={"synchronize_session": False},
    ).scalar_one()
    return int(taken) - 1


def _new_record(
    session: Session,
    account: AccountSettings,
    kind: str,
    title: str,
    delivery: ClaimedDelivery,
    now: datetime,
) -> Case | Opportunity:
    model: type[Case] | type[Opportunity] = Case if kind == "case" else Opportunity
    record = model(
        account_id=account.id,
        ref_no=_next_ref(session, account.id, kind),
        title=title,
        user_id=delivery.user_id,
        created_by_delivery_id=delivery.id,  # so that undoing the filing can remove it
        created_at=now,
    )
    session.add(record)
    session.flush()
    return record


@dataclass
class Applied:
    """What applying a plan created and linked, for the processing record (`applied`)."""

    created: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    # webhook events of what was created, queued at the end (same transaction)
    events: list[tuple[Event, dict[str, Any]]] = field(default_factory=list)

    def to_json(self) -> dict[str, list[str]]:
        return {"created": self.created, "linked": self.linked}


def apply_plan(
    session: Session,
    plan: FilingPlan,
    *,
    delivery: ClaimedDelivery,
    parsed: ParsedMessage,
    account: AccountSettings,
    now: datetime,
    writes: BatchWrites | None = None,
) -> dict[str, list[str]]:
    """File what the plan says; return what was created and linked, for the record.

    The steps, in order: contacts (found or created), their companies, cases and
    opportunities (linked to the contacts), the note with its links, the task.
    `writes`: the batch's, written by the caller when the batch is done; without it,
    before this returns.
    """
    done = Applied()
    if plan.outcome is Outcome.NO_CONTACT:
        return done.to_json()
    batch = BatchWrites() if writes is None else writes
    contact_ids, company_ids = _apply_contacts(session, plan, delivery, account, now, done, batch)
    if account.file_under_companies and contact_ids:
        company_ids.extend(_companies_of(session, batch, contact_ids))
    case_ids, opp_ids = _apply_records(
        session, batch, plan, delivery, account, now, done, contact_ids
    )
    note_id = _apply_note(session, batch, plan, delivery, parsed, account, now, done)
    if note_id is not None:
        _link_note(
            session,
            batch,
            note_id,
            contact_ids,
            company_ids,
            case_ids,
            opp_ids,
            fresh=plan.note_id is None,
        )
        batch.touched.update(contact_ids)
        delivery.note_id = note_id
    if plan.task is not None:
        _apply_task(
            session, batch, plan, plan.task, delivery, account, now, done, note_id, contact_ids
        )
    links = {
        "contact_ids": sorted(set(contact_ids)),
        "company_ids": sorted(set(company_ids)),
        "case_ids": case_ids,
        "opportunity_ids": opp_ids,
    }
    _emit_all(session, account.id, done.events, delivery, plan, links, now)
    if writes is None:
        batch.finish(session, now)
    return done.to_json()


def _apply_contacts(
    session: Session,
    plan: FilingPlan,
    delivery: ClaimedDelivery,
    account: AccountSettings,
    now: datetime,
    done: Applied,
    writes: BatchWrites,
) -> tuple[list[int], list[int]]:
    """The contacts to file under (created when new) and companies matched by address."""
    contact_ids: list[int] = []
    company_ids: list[int] = []
    for action in plan.contacts:
        if action.action == "link_company" and action.company_id is not None:
            company_ids.append(action.company_id)
            done.linked.append(f"company {action.address}")
            continue
        contact_id = action.contact_id
        if action.action == "create_contact":
            contact_id = _create_contact(session, action, delivery, account, now, done, writes)
        else:
            done.linked.append(f"contact {action.address}")
        if contact_id is not None:
            contact_ids.append(contact_id)
    return contact_ids, company_ids


def _create_contact(
    session: Session,
    action: ContactAction,
    delivery: ClaimedDelivery,
    account: AccountSettings,
    now: datetime,
    done: Applied,
    writes: BatchWrites,
) -> int:
    """A new contact, unless one with the address exists by now (decided on a snapshot):
    `writes` answers when the transaction looked the address up already."""
    known = writes.contacts.setdefault(account.id, {})
    if action.address in known:
        existing = known[action.address]
    else:
        existing = session.scalar(
            select(ContactEmail.contact_id).where(
                ContactEmail.account_id == account.id, ContactEmail.email == action.address
            )
        )
    if existing is not None:
        return int(existing)
    contact_id = writes.insert(
        session,
        Contact,
        account_id=account.id,
        name=action.name,
        company_id=action.company_for_new,
        created_by_delivery_id=delivery.id,
        created_at=now,
        last_activity_at=now,
    )
    email = {"account_id": account.id, "contact_id": contact_id, "email": action.address}
    writes.add(table_of(ContactEmail), [email])
    writes.add(
        contact_terms, contact_term_rows(account.id, contact_id, action.name, [action.address])
    )
    known[action.address] = contact_id
    writes.companies[contact_id] = action.company_for_new
    done.created.append(f"contact {action.name} <{action.address}>")
    done.events.append(_contact_event(contact_id, action, delivery.id))
    return contact_id


def _companies_of(session: Session, writes: BatchWrites, contact_ids: list[int]) -> list[int]:
    """The companies the contacts belong to (the account files under companies); those
    of the contacts this transaction created from `writes` (their rows may wait)."""
    found = [writes.companies[i] for i in contact_ids if i in writes.companies]
    older = [i for i in contact_ids if i not in writes.companies]
    if older:
        found.extend(session.scalars(select(Contact.company_id).where(Contact.id.in_(older))))
    return [cid for cid in found if cid is not None]


def _apply_records(
    session: Session,
    writes: BatchWrites,
    plan: FilingPlan,
    delivery: ClaimedDelivery,
    account: AccountSettings,
    now: datetime,
    done: Applied,
    contact_ids: list[int],
) -> tuple[list[int], list[int]]:
    """The cases and opportunities (created or linked), each linked to the contacts."""
    case_ids: list[int] = []
    opp_ids: list[int] = []
    for record in plan.records:
        record_id = record.record_id
        if record.action == "create" or record_id is None:
            made = _new_record(
                session, account, record.kind, record.title or "(no subject)", delivery, now
            )
            record_id = made.id
            prefix = "CA" if record.kind == "case" else "CO"
            done.created.append(f"{record.kind} {prefix}{made.ref_no}")
            done.events.append(_record_event(record.kind, made, f"{prefix}{made.ref_no}", delivery))
        else:
            done.linked.append(f"{record.kind} {record.ref}")
        (case_ids if record.kind == "case" else opp_ids).append(record_id)
    for case_id in case_ids:
        _link(session, writes, case_contacts, "case_id", case_id, "contact_id", contact_ids)
    for opp_id in opp_ids:
        _link(
            session,
            writes,
            opportunity_contacts,
            "opportunity_id",
            opp_id,
            "contact_id",
            contact_ids,
        )
    return case_ids, opp_ids


def _apply_note(
    session: Session,
    writes: BatchWrites,
    plan: FilingPlan,
    delivery: ClaimedDelivery,
    parsed: ParsedMessage,
    account: AccountSettings,
    now: datetime,
    done: Applied,
) -> int | None:
    """The note: the one filed before (a duplicate), or a new one with its attachments.
    Its attachments refer to it at once: then it is not left to the batch's end (a task
    writes the rows waiting before its own, `_apply_task`)."""
    if plan.note_id is not None or plan.note is None:
        return plan.note_id
    draft = plan.note
    note_id = writes.insert(
        session,
        Note,
        now=bool(parsed.attachments),
        account_id=account.id,
        user_id=delivery.user_id,
        delivery_id=delivery.id,
        message_key=plan.message_key,
        message_id=parsed.message_id,
        subject=draft.subject,
        body=draft.body,
        own_text=draft.own_text,
        author_name=draft.author_name,
        author_email=draft.author_email,
        sent_at=draft.date,
        direction=draft.direction,
        is_forward=draft.is_forward,
        created_at=now,
        chain=[m.to_json() for m in draft.chain] or None,
    )
    for part in parsed.attachments:
        _insert_attachment(session, note_id, part)
    done.created.append(f"note #{note_id}")
    done.events.append((Event.NOTE_FILED, {"id": note_id, "subject": draft.subject}))
    return note_id


# SQLite: a large attachment goes in as a zeroblob of its size, filled in chunks.
_INSERT_ATTACHMENT_ZEROBLOB = zeroblob_insert(
    insert(table_of(Attachment)),
    "data",
    returning="id",
)


def _insert_attachment(session: Session, note_id: int, part: MailAttachment) -> None:
    """One attachment row. A file the parser left encoded (`part.source`) is decoded a
    chunk at a time into the row, never held whole (SQLite: blob I/O into a zeroblob;
    PostgreSQL: binary COPY, `store.blobs`)."""
    values = dict(
        note_id=note_id, filename=part.filename, content_type=part.content_type, size=part.size
    )
    if part.source is not None and session.get_bind().dialect.name == "postgresql":
        table = Attachment.__table__
        assert isinstance(table, Table)
        insert_streamed_postgresql(session, table, values, "data", part.size, part.chunks())
        return
    if part.source is not None and session.get_bind().dialect.name == "sqlite":
        row_id = session.execute(
            _INSERT_ATTACHMENT_ZEROBLOB, dict(values, blob_size=part.size)
        ).scalar_one()
        written = fill_blob(session, "attachments", "data", int(row_id), part.chunks())
        if written != part.size:  # never file a cut attachment
            raise RuntimeError(f"wrote {written} of {part.size} bytes of an attachment")
        return
    _insert(session, Attachment, **values, data=part.content())


def _link_note(
    session: Session,
    writes: BatchWrites,
    note_id: int,
    contact_ids: list[int],
    company_ids: list[int],
    case_ids: list[int],
    opp_ids: list[int],
    *,
    fresh: bool,
) -> None:
    """File the note under everything (`fresh`: created just now, so no link exists)."""
    for table, column, ids in (
        (note_contacts, "contact_id", contact_ids),
        (note_companies, "company_id", company_ids),
        (note_cases, "case_id", case_ids),
        (note_opportunities, "opportunity_id", opp_ids),
    ):
        _link(session, writes, table, "note_id", note_id, column, ids, fresh=fresh)


def _apply_task(
    session: Session,
    writes: BatchWrites,
    plan: FilingPlan,
    task: TaskAction,
    delivery: ClaimedDelivery,
    account: AccountSettings,
    now: datetime,
    done: Applied,
    note_id: int | None,
    contact_ids: list[int],
) -> None:
    """The task, once per user, message and due kind (a retry makes none twice)."""
    exists = session.scalar(
        select(Task.id).where(
            Task.account_id == account.id,
            Task.user_id == delivery.user_id,
            Task.message_key == plan.message_key,
            Task.due_kind == task.due_kind,
        )
    )
    if exists is not None:
        return
    if writes.deferred:
        writes.write_rows(session)  # its note (this filing's or the batch's) may wait
    task_id = _insert(
        session,
        Task,
        account_id=account.id,
        user_id=delivery.user_id,
        delivery_id=delivery.id,
        note_id=note_id,
        message_key=plan.message_key,
        title=task.title,
        description=task.description,
        due_date=task.due,
        due_kind=task.due_kind,
        timezone=task.timezone,
        created_at=now,
    )
    _link(session, writes, task_contacts, "task_id", task_id, "contact_id", contact_ids, fresh=True)
    due = task.due.isoformat() if task.due else "no deadline"
    done.created.append(f"task #{task_id} ({due})")
    done.events.append(_task_event(task_id, task, delivery, note_id, contact_ids))


def _contact_event(
    contact_id: int, action: ContactAction, delivery_id: int
) -> tuple[Event, dict[str, Any]]:
    data = {
        "id": contact_id,
        "name": action.name,
        "email": action.address,
        "company_id": action.company_for_new,
        "delivery_id": delivery_id,
    }
    return Event.CONTACT_CREATED, data


def _record_event(
    kind: str, made: Case | Opportunity, ref: str, delivery: ClaimedDelivery
) -> tuple[Event, dict[str, Any]]:
    event = Event.CASE_CREATED if kind == "case" else Event.OPPORTUNITY_CREATED
    data = {
        "id": made.id,
        "ref": ref,
        "title": made.title,
        "user_id": made.user_id,
        "delivery_id": delivery.id,
    }
    return event, data


def _task_event(
    task_id: int,
    task: TaskAction,
    delivery: ClaimedDelivery,
    note_id: int | None,
    contact_ids: list[int],
) -> tuple[Event, dict[str, Any]]:
    data = {
        "id": task_id,
        "title": task.title,
        "due": task.due.isoformat() if task.due else None,
        "user_id": delivery.user_id,
        "note_id": note_id,
        "contact_ids": sorted(set(contact_ids)),
        "delivery_id": delivery.id,
    }
    return Event.TASK_CREATED, data


def _emit_all(
    session: Session,
    account_id: int,
    events: list[tuple[Event, dict[str, Any]]],
    delivery: ClaimedDelivery,
    plan: FilingPlan,
    links: dict[str, list[int]],
    now: datetime,
) -> None:
    """Queue the webhook events of one filing (note.filed gets the note's whole story)."""
    for event, data in events:
        if event is Event.NOTE_FILED and plan.note is not None:
            draft = plan.note
            data = {
                **data,
                "author_name": draft.author_name,
                "author_email": draft.author_email,
                "sent_at": draft.date.isoformat() if draft.date else None,
                "direction": draft.direction,
                "user_id": delivery.user_id,
                "delivery_id": delivery.id,
                **links,
            }
        emit(session, account_id, event, data, now=now)
