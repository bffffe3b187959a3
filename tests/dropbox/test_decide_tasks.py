"""The task dropboxes (SPEC §5.3): titles, descriptions, due dates in the user's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from crmdrop.dropbox.decide import decide, task_due
from crmdrop.dropbox.plan import DropboxKind, FilingPlan, Outcome, UserInfo
from crmdrop.mail.model import ParsedMessage
from tests.dropbox.dropbox_fakes import DOMAIN, FakeAccount, forward_block, make_message, make_owner

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def run(
    message: ParsedMessage,
    owner: UserInfo,
    account: FakeAccount,
    kind: DropboxKind = DropboxKind.TASK,
    now: datetime = NOW,
) -> FilingPlan:
    return decide(message, kind, owner, account, dropbox_domain=DOMAIN, now=now)


def test_the_task_dropbox_makes_a_task_titled_from_the_subject_and_described_by_the_body(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(subject="Re: Send the offer", text="By Friday please."), owner, account)
    assert plan.outcome is Outcome.FILED
    task = plan.task
    assert task is not None
    assert (task.title, task.description) == ("Send the offer", "By Friday please.")
    assert (task.due, task.due_kind, task.timezone) == (None, "none", "Europe/Berlin")
    assert plan.note is not None
    assert "task with no due date" in plan.reason


def test_a_task_needs_no_contact(owner: UserInfo, account: FakeAccount) -> None:
    plan = run(make_message(to=[], subject="Call the bank"), owner, account, DropboxKind.TODAY)
    assert plan.outcome is Outcome.TASK_ONLY
    assert plan.note is None
    assert plan.reply_to is None
    assert plan.task is not None
    assert plan.task.title == "Call the bank"
    assert plan.reason.startswith("task created with no contact")


def test_a_task_from_a_forward_is_titled_and_described_from_the_forwarded_message(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(
        to=[],
        subject="Fwd: Pricing question",
        own_text="Answer this",
        forwarded=[forward_block(subject="Pricing question", body="Could you send the list?")],
    )
    task = run(message, owner, account).task
    assert task is not None
    assert task.title == "Pricing question"
    assert task.description == "Answer this\n\nCould you send the list?"


def test_a_task_without_a_subject_is_called_no_subject(
    owner: UserInfo, account: FakeAccount
) -> None:
    task = run(make_message(subject=""), owner, account).task
    assert task is not None
    assert task.title == "(no subject)"


def test_the_note_dropbox_makes_no_task(owner: UserInfo, account: FakeAccount) -> None:
    assert run(make_message(), owner, account, DropboxKind.NOTE).task is None


@pytest.mark.parametrize(
    ("zone", "now", "today", "tomorrow"),
    [
        # Los Angeles at 23:30 local: UTC is already on the next day.
        (
            "America/Los_Angeles",
            datetime(2026, 7, 11, 6, 30, tzinfo=UTC),
            date(2026, 7, 10),
            date(2026, 7, 11),
        ),
        # The night LA springs forward (2026-03-08, 02:00 → 03:00): 23:30 PST on the 7th.
        (
            "America/Los_Angeles",
            datetime(2026, 3, 8, 7, 30, tzinfo=UTC),
            date(2026, 3, 7),
            date(2026, 3, 8),
        ),
        # London, the day BST starts (2026-03-29 01:00 UTC): 23:30 UTC is 00:30 BST on the 30th...
        (
            "Europe/London",
            datetime(2026, 3, 29, 23, 30, tzinfo=UTC),
            date(2026, 3, 30),
            date(2026, 3, 31),
        ),
        # ...while the evening before, 23:30 UTC is still 23:30 GMT on the 28th.
        (
            "Europe/London",
            datetime(2026, 3, 28, 23, 30, tzinfo=UTC),
            date(2026, 3, 28),
            date(2026, 3, 29),
        ),
        # Auckland (UTC+13 in March) is a day ahead of UTC at noon.
        (
            "Pacific/Auckland",
            datetime(2026, 3, 3, 12, 0, tzinfo=UTC),
            date(2026, 3, 4),
            date(2026, 3, 5),
        ),
        # Auckland the night NZDT ends (2026-04-05 03:00 → 02:00): 00:30 NZDT on the 5th.
        (
            "Pacific/Auckland",
            datetime(2026, 4, 4, 11, 30, tzinfo=UTC),
            date(2026, 4, 5),
            date(2026, 4, 6),
        ),
    ],
)
def test_today_and_tomorrow_are_the_users_local_calendar_days(
    account: FakeAccount, zone: str, now: datetime, today: date, tomorrow: date
) -> None:
    owner = make_owner(timezone=zone)
    today_task = run(make_message(), owner, account, DropboxKind.TODAY, now).task
    tomorrow_task = run(make_message(), owner, account, DropboxKind.TOMORROW, now).task
    assert today_task is not None and tomorrow_task is not None
    assert (today_task.due, today_task.due_kind, today_task.timezone) == (today, "today", zone)
    assert (tomorrow_task.due, tomorrow_task.due_kind) == (tomorrow, "tomorrow")


def test_now_may_be_given_in_any_zone_it_is_the_instant_that_counts() -> None:
    from zoneinfo import ZoneInfo

    la_evening = datetime(2026, 7, 10, 23, 30, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert task_due(DropboxKind.TODAY, "Pacific/Auckland", la_evening) == date(2026, 7, 11)
    assert task_due(DropboxKind.TODAY, "America/Los_Angeles", la_evening) == date(2026, 7, 10)


def test_an_unknown_time_zone_falls_back_to_utc_and_says_so(account: FakeAccount) -> None:
    owner = make_owner(timezone="Mars/Olympus_Mons")
    now = datetime(2026, 7, 11, 23, 30, tzinfo=UTC)
    plan = run(make_message(), owner, account, DropboxKind.TODAY, now)
    assert plan.task is not None
    assert (plan.task.due, plan.task.timezone) == (date(2026, 7, 11), "UTC")
    assert plan.notices == ["unknown time zone 'Mars/Olympus_Mons': due date computed in UTC"]


def test_task_due_refuses_a_naive_now() -> None:
    with pytest.raises(ValueError):
        task_due(DropboxKind.TODAY, "UTC", datetime(2026, 3, 3, 12, 0))


def test_a_task_with_contacts_says_its_due_date_in_the_reason(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(), owner, account, DropboxKind.TOMORROW)
    assert plan.reason == "filed under 1 contact (1 created); task due 2026-03-04"
