"""decide on the note dropbox: addresses, contacts, the note, no-contact replies, duplicates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crmdrop.dropbox.decide import decide, message_key, normalize_message_id
from crmdrop.dropbox.plan import ContactMatch, DropboxKind, FilingPlan, Outcome, UserInfo
from crmdrop.mail.model import ParsedMessage
from tests.dropbox.dropbox_fakes import DOMAIN, FakeAccount, forward_block, make_message, make_owner

NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def run(
    message: ParsedMessage,
    owner: UserInfo,
    account: FakeAccount,
    kind: DropboxKind = DropboxKind.NOTE,
    **kwargs: object,
) -> FilingPlan:
    return decide(message, kind, owner, account, dropbox_domain=DOMAIN, now=NOW, **kwargs)  # type: ignore[arg-type]


def decision(plan: FilingPlan, address: str) -> tuple[bool, str]:
    (d,) = [d for d in plan.addresses if d.address == address]
    return d.kept, d.rule


# --- addresses and contacts ---------------------------------------------------------------


def test_it_files_a_cc_under_the_recipient_and_creates_the_contact(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(), owner, account)
    assert plan.outcome is Outcome.FILED
    assert [(c.address, c.name, c.action) for c in plan.contacts] == [
        ("jane@customer.io", "Jane Doe", "create_contact")
    ]
    assert plan.reason == "filed under 1 contact (1 created)"


def test_it_records_one_decision_per_address_with_every_place_it_was_seen(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(body_addresses=[("", "JANE@customer.io")])
    plan = run(message, owner, account)
    jane = [d for d in plan.addresses if d.address == "jane@customer.io"]
    assert len(jane) == 1
    assert jane[0].where == ("header:to", "body:text")
    assert jane[0].name == "Jane Doe"
    assert [d.address for d in plan.addresses] == [
        "olivia@acme.com",
        "jane@customer.io",
        "dropbox-to…@drop.example.com",  # recorded without its secret token
    ]


def test_a_header_display_name_beats_a_name_found_in_the_body(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(
        to=[("", "jane@customer.io")],
        body_addresses=[("Call Jane", "jane@customer.io")],
        forwarded=[forward_block(("Jane Doe", "jane@customer.io"))],
    )
    plan = run(message, owner, account)
    (jane,) = [d for d in plan.addresses if d.address == "jane@customer.io"]
    assert jane.name == "Jane Doe"
    assert plan.contacts[0].name == "Jane Doe"


def test_it_discards_the_owners_own_address_and_the_dropbox(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(), owner, account)
    assert decision(plan, "olivia@acme.com") == (False, "owner")
    assert decision(plan, "dropbox-to…@drop.example.com") == (False, "dropbox")
    assert decision(plan, "jane@customer.io") == (True, "contact")


def test_it_links_an_existing_contact_instead_of_creating_one(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.contacts["jane@customer.io"] = ContactMatch("contact", 41, "Jane D.")
    plan = run(make_message(), owner, account)
    (action,) = plan.contacts
    assert (action.action, action.contact_id, action.name, action.why) == (
        "link_contact",
        41,
        "Jane D.",
        "address",
    )
    assert plan.reason == "filed under 1 contact (0 created)"


def test_it_links_a_company_found_by_its_own_address(owner: UserInfo, account: FakeAccount) -> None:
    account.contacts["sales@customer.io"] = ContactMatch("company", 5, "Customer Inc")
    plan = run(make_message(to=[("Sales", "sales@customer.io")]), owner, account)
    (action,) = plan.contacts
    assert (action.action, action.company_id, action.contact_id) == ("link_company", 5, None)


def test_two_addresses_of_one_contact_link_it_once(owner: UserInfo, account: FakeAccount) -> None:
    jane = ContactMatch("contact", 41, "Jane Doe")
    account.contacts.update({"jane@customer.io": jane, "jane.doe@customer.io": jane})
    message = make_message(to=[("Jane", "jane@customer.io"), ("Jane", "jane.doe@customer.io")])
    plan = run(message, owner, account)
    assert [c.contact_id for c in plan.contacts] == [41]


def test_it_names_a_new_contact_from_the_local_part_when_the_message_gives_no_name(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(to=[("", "jean-luc.van.damme@customer.io")]), owner, account)
    assert plan.contacts[0].name == "Jean-Luc van Damme"


def test_a_new_contact_joins_the_one_company_of_its_domain(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.company_domains["customer.io"] = 5
    plan = run(make_message(), owner, account)
    (action,) = plan.contacts
    assert action.company_for_new == 5
    assert action.company_id is None  # the note goes under the company only when §1.4 is on


def test_with_file_under_companies_the_note_also_goes_under_the_contacts_company(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.file_under_companies = True
    account.company_domains["customer.io"] = 5
    account.contacts["bob@partner.io"] = ContactMatch("contact", 9, "Bob")
    account.contact_companies[9] = 12
    plan = run(
        make_message(to=[("Jane", "jane@customer.io"), ("Bob", "bob@partner.io")]), owner, account
    )
    assert [(c.address, c.company_id) for c in plan.contacts] == [
        ("jane@customer.io", 5),
        ("bob@partner.io", 12),
    ]


def test_free_mail_domains_never_make_or_match_a_company(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.company_domains["gmail.com"] = 99
    account.company_domains["hotmail.co.uk"] = 98
    message = make_message(to=[("Jane", "jane@gmail.com"), ("Tom", "tom@hotmail.co.uk")])
    plan = run(message, owner, account)
    assert [c.company_for_new for c in plan.contacts] == [None, None]
    assert account.domain_lookups == []


def test_it_files_nothing_when_no_contact_survives(owner: UserInfo, account: FakeAccount) -> None:
    message = make_message(to=[("Colin", "colin@acme.com")])
    plan = run(message, owner, account)
    assert plan.outcome is Outcome.NO_CONTACT
    assert plan.note is None
    assert plan.contacts == []
    assert plan.reason.startswith("no contact found: every address was discarded")
    assert "colleague" in plan.reason


def test_a_message_with_no_address_at_all_is_no_contact(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(from_=None, to=[], dropbox=None)
    plan = run(message, owner, account)
    assert plan.outcome is Outcome.NO_CONTACT
    assert plan.reason == "no contact found: the message has no address"


# --- no-contact replies -------------------------------------------------------------------


def test_the_no_contact_reply_goes_to_the_author_when_it_is_a_verified_address(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(from_=("Olivia", "Olivia.Home@gmail.com"), to=[])
    plan = run(message, owner, account)
    assert plan.outcome is Outcome.NO_CONTACT
    assert plan.reply_to == "olivia.home@gmail.com"


def test_the_no_contact_reply_goes_to_the_signup_address_when_the_author_is_unverified(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(from_=("Olivia", "o.owner@acme.com"), to=[])
    plan = run(message, owner, account)
    assert plan.reply_to == "olivia@acme.com"


def test_the_no_contact_reply_never_goes_to_a_contact_who_replied_all(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.exclusions.append("@customer.io")
    message = make_message(from_=("Jane", "jane@customer.io"), to=[("Olivia", "olivia@acme.com")])
    plan = run(message, owner, account)
    assert plan.outcome is Outcome.NO_CONTACT
    assert plan.reply_to == "olivia@acme.com"


def test_auto_generated_mail_gets_no_reply(owner: UserInfo, account: FakeAccount) -> None:
    message = make_message(to=[], headers={"Auto-Submitted": ["auto-replied"]})
    plan = run(message, owner, account)
    assert plan.outcome is Outcome.NO_CONTACT
    assert plan.reply_to is None
    assert plan.auto_generated == "Auto-Submitted: auto-replied"
    assert "no reply" in plan.reason


def test_a_null_envelope_sender_gets_no_reply(owner: UserInfo, account: FakeAccount) -> None:
    plan = run(make_message(to=[]), owner, account, envelope_from="<>")
    assert plan.reply_to is None
    assert plan.auto_generated is not None


def test_a_filed_message_gets_no_reply(owner: UserInfo, account: FakeAccount) -> None:
    assert run(make_message(), owner, account).reply_to is None


def test_auto_generated_mail_is_still_filed_when_a_contact_survives(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(headers={"Auto-Submitted": ["auto-generated"]}), owner, account)
    assert plan.outcome is Outcome.FILED
    assert plan.auto_generated == "Auto-Submitted: auto-generated"


# --- the note -----------------------------------------------------------------------------


def test_a_cc_note_keeps_the_messages_own_author_date_subject_and_trimmed_body(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(
        text="Thanks!\n\n> old quoted text", own_text="Thanks!", attachments=["offer.pdf"]
    )
    note = run(message, owner, account).note
    assert note is not None
    assert (note.subject, note.body, note.own_text) == ("Our meeting", "Thanks!", "")
    assert (note.author_name, note.author_email) == ("Olivia Owner", "olivia@acme.com")
    assert note.date == datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
    assert note.direction == "from_user"
    assert not note.is_forward
    assert note.attachment_names == ("offer.pdf",)


def test_a_message_from_a_contact_is_to_the_user(owner: UserInfo, account: FakeAccount) -> None:
    message = make_message(
        from_=("Jane Doe", "jane@customer.io"), to=[("Olivia", "olivia@acme.com")]
    )
    note = run(message, owner, account).note
    assert note is not None
    assert note.direction == "to_user"


def test_a_forward_keeps_the_original_author_date_subject_and_body(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(
        to=[],
        subject="Fwd: Pricing question",
        text="FYI, see below\n\n---------- Forwarded message ---------\n...",
        own_text="FYI, see below",
        forwarded=[forward_block()],
    )
    plan = run(message, owner, account)
    assert plan.outcome is Outcome.FILED
    assert [c.address for c in plan.contacts] == ["jane@customer.io"]
    note = plan.note
    assert note is not None
    assert note.is_forward
    assert (note.author_name, note.author_email) == ("Jane Doe", "jane@customer.io")
    assert note.date == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    assert note.subject == "Pricing question"
    assert note.body == "Could you send the price list?"
    assert note.own_text == "FYI, see below"
    assert note.direction == "to_user"


def test_a_forward_whose_outer_block_names_no_author_takes_the_next_that_does(
    owner: UserInfo, account: FakeAccount
) -> None:
    bare = forward_block(None, to=(), subject=None, body="", depth=1)
    inner = forward_block(("Ken Buyer", "ken@buyer.io"), subject="Order", depth=2)
    note = run(make_message(to=[], forwarded=[bare, inner]), owner, account).note
    assert note is not None
    assert (note.author_name, note.author_email) == ("Ken Buyer", "ken@buyer.io")
    assert note.subject == "Order"


def test_a_forward_of_the_users_own_message_is_from_the_user(
    owner: UserInfo, account: FakeAccount
) -> None:
    block = forward_block(from_=("Olivia", "olivia@acme.com"), to=[("Jane", "jane@customer.io")])
    note = run(make_message(to=[], forwarded=[block]), owner, account).note
    assert note is not None
    assert note.direction == "from_user"


def test_a_reply_quoting_history_is_not_a_forward(owner: UserInfo, account: FakeAccount) -> None:
    message = make_message(own_text="Sounds good.", forwarded=[forward_block(kind="reply")])
    note = run(message, owner, account).note
    assert note is not None
    assert not note.is_forward
    assert note.body == "Sounds good."
    assert note.author_email == "olivia@acme.com"


def test_a_message_forwarded_as_an_attachment_is_filed_as_that_message(
    owner: UserInfo, account: FakeAccount
) -> None:
    inner = make_message(
        from_=("Jane Doe", "jane@customer.io"),
        to=[("Olivia", "olivia@acme.com")],
        subject="Contract",
        text="Signed copy attached.",
        date=datetime(2026, 2, 1, 8, 0, tzinfo=UTC),
        dropbox=None,
    )
    message = make_message(to=[], subject="Fwd: Contract", own_text="", attached=[inner])
    plan = run(message, owner, account)
    assert [c.address for c in plan.contacts] == ["jane@customer.io"]
    note = plan.note
    assert note is not None
    assert note.is_forward
    assert (note.subject, note.body, note.author_email) == (
        "Contract",
        "Signed copy attached.",
        "jane@customer.io",
    )
    assert plan.forwarded[-1].kind == "attached"


def test_the_plan_lists_every_forwarded_block_outermost_first(
    owner: UserInfo, account: FakeAccount
) -> None:
    blocks = [forward_block(), forward_block(("Bob", "bob@partner.io"), depth=2, kind="reply")]
    plan = run(make_message(to=[], forwarded=blocks), owner, account)
    assert [(b.depth, b.kind, b.from_) for b in plan.forwarded] == [
        (1, "forward", "Jane Doe <jane@customer.io>"),
        (2, "reply", "Bob <bob@partner.io>"),
    ]
    assert plan.forwarded[0].client == "gmail"
    assert plan.forwarded[0].to_json()["to"] == ["Olivia Owner <olivia@acme.com>"]
    assert plan.to_json()["forwarded"][0]["date"] == "2026-03-02T09:15:00+00:00"


# --- identity and duplicates --------------------------------------------------------------


def test_the_message_key_is_the_message_id_in_angle_brackets_lowercased() -> None:
    assert message_key(make_message(message_id="<AbC.1@Mail.Acme.com>")) == "<abc.1@mail.acme.com>"
    assert message_key(make_message(message_id="AbC.1@Mail.Acme.com")) == "<abc.1@mail.acme.com>"
    assert normalize_message_id("  <>  ") is None


def test_without_a_message_id_the_key_is_the_content_hash() -> None:
    assert message_key(make_message(message_id=None, content_hash="ff00")) == "sha256:ff00"
    assert message_key(make_message(message_id="<>", content_hash="ff00")) == "sha256:ff00"


def test_without_any_hash_the_key_is_still_stable_and_content_derived() -> None:
    a = message_key(make_message(message_id=None, content_hash=""))
    b = message_key(make_message(message_id=None, content_hash=""))
    c = message_key(make_message(message_id=None, content_hash="", text="other"))
    assert a == b != c
    assert a.startswith("sha256:")


def test_a_message_filed_before_is_a_duplicate_that_still_lists_its_contacts(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.notes["<m1@mail.acme.com>"] = 314
    plan = run(make_message(cc=[("Bob", "bob@partner.io")]), owner, account)
    assert plan.outcome is Outcome.DUPLICATE
    assert plan.note_id == 314
    assert [c.address for c in plan.contacts] == ["jane@customer.io", "bob@partner.io"]
    assert plan.reply_to is None
    assert "already filed as note 314" in plan.reason


def test_a_duplicate_delivery_with_no_contact_sends_no_error(account: FakeAccount) -> None:
    colin = make_owner(id=8, addresses=frozenset({"colin@acme.com"}), signup_email="colin@acme.com")
    account.notes["<m1@mail.acme.com>"] = 314
    plan = run(make_message(to=[("Colin", "colin@acme.com")]), colin, account)
    assert plan.outcome is Outcome.DUPLICATE
    assert plan.reply_to is None


def test_the_plan_is_json_ready(owner: UserInfo, account: FakeAccount) -> None:
    data = run(make_message(), owner, account).to_json()
    assert data["outcome"] == "filed"
    assert data["dropbox"] == "note"
    assert data["note"]["date"] == "2026-03-03T10:00:00+00:00"


def test_decide_refuses_a_naive_now(owner: UserInfo, account: FakeAccount) -> None:
    with pytest.raises(ValueError):
        decide(
            make_message(),
            DropboxKind.NOTE,
            owner,
            account,
            dropbox_domain=DOMAIN,
            now=datetime(2026, 3, 3, 12, 0),
        )


def test_the_record_never_shows_a_dropbox_token(owner: UserInfo, account: FakeAccount) -> None:
    secret = f"dropbox-k3y5ecr3t0000000abcd@{DOMAIN}"
    block = forward_block(to=[("Bob's dropbox", secret)])
    message = make_message(to=[("Box", secret)], forwarded=[block])
    plan = run(message, owner, account)
    assert "k3y5ecr3t" not in str(plan.to_json())
    assert decision(plan, f"dropbox-k3…@{DOMAIN}") == (False, "dropbox")


def test_a_forwarded_date_with_no_zone_is_read_in_the_owners_time_zone(
    account: FakeAccount,
) -> None:
    block = forward_block(date=datetime(2026, 7, 1, 14, 30))  # "Wed, Jul 1, 2026 at 2:30 PM"
    owner = make_owner(timezone="America/New_York")
    note = run(make_message(to=[], forwarded=[block]), owner, account).note
    assert note is not None and note.date is not None
    assert note.date.astimezone(UTC) == datetime(2026, 7, 1, 18, 30, tzinfo=UTC)  # EDT = UTC-4


# --- the note's date (issue #10) ------------------------------------------------------------

RECEIVED = datetime(2026, 3, 3, 11, 59, tzinfo=UTC)


def test_a_message_without_a_date_header_gets_the_time_it_was_received(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(date=None), owner, account, received=RECEIVED)
    assert plan.note is not None and plan.note.date == RECEIVED


def test_a_message_without_a_date_and_no_received_time_is_dated_now_never_none(
    owner: UserInfo, account: FakeAccount
) -> None:
    plan = run(make_message(date=None), owner, account)
    assert plan.note is not None and plan.note.date == NOW


def test_a_forward_whose_block_names_no_date_takes_the_forward_s_own_date(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(to=[], forwarded=[forward_block(date=None)])
    plan = run(message, owner, account, received=RECEIVED)
    assert plan.note is not None and plan.note.date == datetime(2026, 3, 3, 10, 0, tzinfo=UTC)


def test_a_forwarded_block_s_date_wins(owner: UserInfo, account: FakeAccount) -> None:
    plan = run(make_message(to=[], forwarded=[forward_block()]), owner, account, received=RECEIVED)
    assert plan.note is not None and plan.note.date == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
