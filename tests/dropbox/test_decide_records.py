"""Cases and opportunities (SPEC §5.1) and threads (SPEC §5.2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crmdrop.dropbox.decide import decide, find_references
from crmdrop.dropbox.plan import (
    ContactMatch,
    DropboxKind,
    FilingPlan,
    Outcome,
    RecordAction,
    RecordRef,
    UserInfo,
)
from crmdrop.mail.model import ParsedMessage
from tests.dropbox.dropbox_fakes import (
    ACCOUNT_ID,
    DOMAIN,
    OTHER_ACCOUNT_ID,
    FakeAccount,
    forward_block,
    make_message,
)

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
CA123 = RecordRef("case", 501, "CA123", ACCOUNT_ID)
CO34322 = RecordRef("opportunity", 777, "CO34322", ACCOUNT_ID)
FOREIGN_CA9 = RecordRef("case", 9009, "CA9", OTHER_ACCOUNT_ID)


def run(
    message: ParsedMessage,
    owner: UserInfo,
    account: FakeAccount,
    kind: DropboxKind = DropboxKind.NOTE,
) -> FilingPlan:
    return decide(message, kind, owner, account, dropbox_domain=DOMAIN, now=NOW)


@pytest.fixture
def records_account(account: FakeAccount) -> FakeAccount:
    account.records = {
        ("case", 123): CA123,
        ("opportunity", 34322): CO34322,
        ("case", 9): FOREIGN_CA9,
    }
    return account


# --- finding references -------------------------------------------------------------------


def test_references_are_found_case_insensitively_and_word_bounded() -> None:
    text = "see #ca123, #CO34322. not x#CA5 nor #CA12abc nor #CAfe; #CA0123 again; (#co7)"
    assert find_references(text) == [("CA", 123), ("CO", 34322), ("CO", 7)]


def test_references_are_found_in_the_subject_and_the_body(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    message = make_message(subject="Re: ticket #CA123", text="about deal #co34322")
    plan = run(message, owner, records_account)
    assert [(r.kind, r.action, r.record_id, r.why) for r in plan.records] == [
        ("case", "link", 501, "reference #CA123"),
        ("opportunity", "link", 777, "reference #CO34322"),
    ]


# --- to the note dropbox ------------------------------------------------------------------


def test_a_reference_of_the_same_account_links_the_note_from_any_dropbox(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    plan = run(make_message(text="Update on #CA123"), owner, records_account)
    assert plan.records == [
        RecordAction("case", "link", record_id=501, ref="CA123", why="reference #CA123")
    ]
    assert "case CA123 linked" in plan.reason


def test_a_reference_of_another_account_is_ignored_and_noted(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    plan = run(make_message(text="Update on #CA9"), owner, records_account)
    assert plan.records == []
    assert plan.notices == ["reference #CA9 matches no case of this account: ignored"]


def test_an_unknown_reference_on_the_note_dropbox_is_ignored_and_noted(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    plan = run(make_message(text="Update on #CA404"), owner, records_account)
    assert plan.records == []
    assert plan.notices == ["reference #CA404 matches no case of this account: ignored"]


def test_the_note_dropbox_creates_no_case_without_a_reference(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    assert run(make_message(), owner, records_account).records == []


# --- to the case and opportunity dropboxes ------------------------------------------------


def test_the_case_dropbox_creates_a_case_titled_from_the_subject_without_prefixes(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(subject="RE: AW: Fwd: Broken login"), owner, account, DropboxKind.CASE)
    assert plan.outcome is Outcome.FILED
    assert plan.records == [
        RecordAction("case", "create", title="Broken login", why="new from -case@ dropbox")
    ]


def test_the_opp_dropbox_creates_an_opportunity(owner: UserInfo, account: FakeAccount) -> None:
    plan = run(make_message(subject="Fwd: 200 seats"), owner, account, DropboxKind.OPP)
    assert [(r.kind, r.action, r.title) for r in plan.records] == [
        ("opportunity", "create", "200 seats")
    ]


@pytest.mark.parametrize(
    ("sent", "title"),
    [
        ("Fwd: Invoice 7 – please check", "Invoice 7 – please check"),
        ("WG: AW: Rechnung 7", "Rechnung 7"),
        ("TR: RE: Facture 7", "Facture 7"),
        ("RV: Factura 7", "Factura 7"),
        ("Odp: PD: Faktura 7", "Faktura 7"),
        ("转发: 发票 7", "发票 7"),
    ],
)
def test_a_new_case_from_a_forward_is_titled_from_the_subject_the_user_sent(
    owner: UserInfo, account: FakeAccount, sent: str, title: str
) -> None:
    message = make_message(to=[], subject=sent, forwarded=[forward_block(subject="Re: Invoice 7")])
    plan = run(message, owner, account, DropboxKind.CASE)
    assert plan.records[0].title == title


def test_a_bare_fwd_subject_leaves_the_forwarded_subject_as_the_title(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(
        to=[], subject="Fwd:", forwarded=[forward_block(subject="Re: Invoice 7")]
    )
    plan = run(message, owner, account, DropboxKind.OPP)
    assert plan.records[0].title == "Invoice 7"


def test_a_new_case_without_a_subject_is_called_no_subject(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(subject="Re: "), owner, account, DropboxKind.CASE)
    assert plan.records[0].title == "(no subject)"


def test_the_case_dropbox_links_a_valid_reference_instead_of_creating(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    plan = run(make_message(subject="Re: #CA123 login"), owner, records_account, DropboxKind.CASE)
    assert [(r.action, r.record_id) for r in plan.records] == [("link", 501)]


def test_the_case_dropbox_creates_a_case_for_an_unknown_reference_and_says_so(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    plan = run(make_message(subject="#CA404 login"), owner, records_account, DropboxKind.CASE)
    assert [(r.kind, r.action) for r in plan.records] == [("case", "create")]
    assert "unknown reference #CA404" in plan.records[0].why
    assert plan.notices == ["reference #CA404 matches no case of this account: created a new case"]


def test_the_case_dropbox_creates_a_case_when_the_reference_is_of_another_account(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    plan = run(make_message(subject="#CA9 login"), owner, records_account, DropboxKind.CASE)
    assert [(r.kind, r.action) for r in plan.records] == [("case", "create")]
    assert plan.notices == ["reference #CA9 matches no case of this account: created a new case"]


def test_an_opportunity_reference_on_the_case_dropbox_links_it_and_still_creates_a_case(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    plan = run(make_message(text="for #CO34322"), owner, records_account, DropboxKind.CASE)
    assert [(r.kind, r.action) for r in plan.records] == [
        ("opportunity", "link"),
        ("case", "create"),
    ]


def test_the_case_dropbox_files_nothing_when_no_contact_survives(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(to=[]), owner, account, DropboxKind.CASE)
    assert plan.outcome is Outcome.NO_CONTACT
    assert plan.records == []
    assert plan.reply_to == "olivia@acme.com"


# --- threads ------------------------------------------------------------------------------


def test_a_reply_in_a_thread_joins_the_records_the_earlier_message_was_filed_to(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.thread_record_map["<first@mail.acme.com>"] = [CA123]
    message = make_message(
        in_reply_to=["<FIRST@mail.acme.com>"], references=["<first@mail.acme.com>"]
    )
    plan = run(message, owner, account)
    assert plan.records == [RecordAction("case", "link", record_id=501, ref="CA123", why="thread")]


def test_a_reply_in_a_thread_links_the_threads_contacts_too(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.thread_contact_map["<first@mail.acme.com>"] = [ContactMatch("contact", 41, "Jane Doe")]
    message = make_message(to=[], in_reply_to=["<first@mail.acme.com>"])
    plan = run(message, owner, account)
    assert plan.outcome is Outcome.FILED
    assert [(c.action, c.contact_id, c.why) for c in plan.contacts] == [
        ("link_contact", 41, "thread")
    ]


def test_a_thread_contact_already_found_by_address_is_linked_once(
    owner: UserInfo, account: FakeAccount
) -> None:
    jane = ContactMatch("contact", 41, "Jane Doe")
    account.contacts["jane@customer.io"] = jane
    account.thread_contact_map["<first@mail.acme.com>"] = [jane]
    plan = run(make_message(references=["<first@mail.acme.com>"]), owner, account)
    assert [(c.contact_id, c.why) for c in plan.contacts] == [(41, "address")]


def test_a_record_linked_by_reference_and_thread_is_linked_once(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    records_account.thread_record_map["<first@mail.acme.com>"] = [CA123]
    message = make_message(subject="#CA123", in_reply_to=["<first@mail.acme.com>"])
    plan = run(message, owner, records_account)
    assert [r.why for r in plan.records] == ["reference #CA123"]


def test_thread_records_of_another_account_are_never_linked(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.thread_record_map["<first@mail.acme.com>"] = [FOREIGN_CA9]
    plan = run(make_message(in_reply_to=["<first@mail.acme.com>"]), owner, account)
    assert plan.records == []


def test_a_case_dropbox_reply_in_a_case_thread_joins_that_case_instead_of_creating_one(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.thread_record_map["<first@mail.acme.com>"] = [CA123]
    message = make_message(in_reply_to=["<first@mail.acme.com>"])
    plan = run(message, owner, account, DropboxKind.CASE)
    assert [(r.action, r.why) for r in plan.records] == [("link", "thread")]


# --- duplicates ---------------------------------------------------------------------------


def test_a_duplicate_to_another_case_dropbox_joins_the_case_already_made(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.notes["<m1@mail.acme.com>"] = 314
    account.thread_record_map["<m1@mail.acme.com>"] = [CA123]
    plan = run(make_message(), owner, account, DropboxKind.CASE)
    assert plan.outcome is Outcome.DUPLICATE
    assert [(r.action, r.record_id, r.why) for r in plan.records] == [
        ("link", 501, "already filed")
    ]


def test_a_duplicate_to_the_case_dropbox_of_a_note_filed_without_a_case_creates_one(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.notes["<m1@mail.acme.com>"] = 314
    plan = run(make_message(subject="Broken login"), owner, account, DropboxKind.CASE)
    assert plan.outcome is Outcome.DUPLICATE
    assert [(r.action, r.title) for r in plan.records] == [("create", "Broken login")]


def test_no_contact_on_the_case_dropbox_announces_no_case_creation(
    owner: UserInfo, records_account: FakeAccount
) -> None:
    plan = run(make_message(to=[], subject="#CA404"), owner, records_account, DropboxKind.CASE)
    assert plan.outcome is Outcome.NO_CONTACT
    assert plan.records == []
    assert plan.notices == []


def test_thread_lookups_offer_the_key_form_and_the_raw_message_id(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.thread_record_map["First@Mail.acme.com"] = [CA123]  # a store keyed by raw ids
    message = make_message(in_reply_to=["<First@Mail.acme.com>"])
    plan = run(message, owner, account)
    assert [(r.record_id, r.why) for r in plan.records] == [(501, "thread")]
