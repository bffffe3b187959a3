"""A user's tasks, grouped by when they are due in the user's own time zone (SPEC §5.3),
completed and reopened from the tasks page."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from crmdrop.store.models import Contact, Note, Task, User, task_contacts
from crmdrop.store.scope import NotFound, owned
from crmdrop.store.timeline import Ref

DONE_SHOWN = 50  # completed tasks listed (the most recent)


class Due(StrEnum):
    """The tasks page's groups, in the order it shows them."""

    OVERDUE = "overdue"
    TODAY = "today"
    TOMORROW = "tomorrow"
    LATER = "later"
    NO_DATE = "no date"
    DONE = "done"


@dataclass(frozen=True)
class TaskItem:
    id: int
    title: str
    description: str
    due_date: date | None
    done: bool
    contacts: list[Ref]
    delivery_id: int  # the email that created it (its processing record)
    note: Ref | None  # the note filed from that email, when there is one


@dataclass(frozen=True)
class TaskBoard:
    today: date  # in the user's time zone
    timezone: str
    groups: dict[Due, list[TaskItem]] = field(default_factory=dict)


def group_of(due: date | None, done: bool, today: date) -> Due:
    """Which group a task belongs to on `today` (the user's date)."""
    if done:
        return Due.DONE
    if due is None:
        return Due.NO_DATE
    if due < today:
        return Due.OVERDUE
    if due == today:
        return Due.TODAY
    if due == today + timedelta(days=1):
        return Due.TOMORROW
    return Due.LATER


def _items(session: Session, tasks: list[Task]) -> list[TaskItem]:
    ids = [t.id for t in tasks]
    contacts: dict[int, list[Ref]] = defaultdict(list)
    notes: dict[int, Ref] = {}
    if ids:
        for task_id, cid, name in session.execute(
            select(task_contacts.c.task_id, Contact.id, Contact.name)
            .join(Contact, Contact.id == task_contacts.c.contact_id)
            .where(task_contacts.c.task_id.in_(ids))
            .order_by(Contact.name)
        ):
            contacts[task_id].append(Ref(cid, name))
        note_ids = {t.note_id for t in tasks if t.note_id}
        if note_ids:
            rows = session.execute(select(Note.id, Note.subject).where(Note.id.in_(note_ids)))
            notes = {i: Ref(i, subject) for i, subject in rows}
    return [
        TaskItem(
            t.id,
            t.title,
            t.description,
            t.due_date,
            t.done,
            contacts.get(t.id, []),
            t.delivery_id,
            notes.get(t.note_id) if t.note_id else None,
        )
        for t in tasks
    ]


def task_board(session: Session, user_id: int, *, now: datetime) -> TaskBoard:
    """The user's open tasks grouped overdue / today / tomorrow / later / no date on the
    user's own calendar (their time zone), soonest first, then the latest done ones."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user #{user_id}")
    today = now.astimezone(ZoneInfo(user.timezone)).date()
    open_tasks = list(
        session.scalars(
            select(Task)
            .where(Task.user_id == user_id, Task.done.is_(False))
            .order_by(Task.due_date.is_(None), Task.due_date, Task.id)
        )
    )
    done = list(
        session.scalars(
            select(Task)
            .where(Task.user_id == user_id, Task.done.is_(True))
            .order_by(Task.id.desc())
            .limit(DONE_SHOWN)
        )
    )
    board = TaskBoard(today=today, timezone=user.timezone, groups={g: [] for g in Due})
    for item in _items(session, open_tasks + done):
        board.groups[group_of(item.due_date, item.done, today)].append(item)
    return board


def set_task_done(session: Session, account_id: int, task_id: int, done: bool) -> TaskItem:
    """Complete (or reopen) a task of the account."""
    task = owned(session, Task, task_id, account_id, "task")
    task.done = done
    session.flush()
    return _items(session, [task])[0]


def get_task(session: Session, account_id: int, task_id: int) -> TaskItem:
    """One task of the account (another account's: NotFound)."""
    return _items(session, [owned(session, Task, task_id, account_id, "task")])[0]
