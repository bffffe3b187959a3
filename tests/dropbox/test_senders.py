from __future__ import annotations

import pytest

from crmdrop.dropbox.plan import UserInfo
from crmdrop.dropbox.senders import (
    auto_generated_reason,
    bulk_reason,
    check_message_sender,
    check_sender,
)
from tests.dropbox.dropbox_fakes import make_message, make_owner


def test_it_accepts_the_owner_as_a_recognized_sender(owner: UserInfo) -> None:
    verdict = check_sender("olivia@acme.com", ["jane@customer.io"], owner)
    assert verdict.allowed
    assert verdict.rule == "recognized_sender"


def test_it_recognizes_an_additional_address_in_any_case(owner: UserInfo) -> None:
    verdict = check_sender("O.Owner@ACME.com", [], owner)
    assert verdict.allowed
    assert verdict.rule == "recognized_sender"


def test_it_accepts_reply_all_from_a_contact_when_the_owner_is_a_recipient(owner: UserInfo) -> None:
    verdict = check_sender("jane@customer.io", ["bob@customer.io", "Olivia@Acme.com"], owner)
    assert verdict.allowed
    assert verdict.rule == "reply_all_from_contact"


def test_it_rejects_reply_all_when_the_owner_turned_it_off() -> None:
    owner = make_owner(accept_reply_all=False)
    verdict = check_sender("jane@customer.io", ["olivia@acme.com"], owner)
    assert not verdict.allowed
    assert verdict.rule == "not_allowed"
    assert "reply-all" in verdict.detail


def test_it_rejects_a_stranger_with_a_sentence_naming_their_address(owner: UserInfo) -> None:
    verdict = check_sender("spammer@bad.example", ["someone@else.example"], owner)
    assert not verdict.allowed
    assert verdict.rule == "not_allowed"
    assert "spammer@bad.example" in verdict.detail
    assert verdict.detail.endswith(".")


def test_the_rejection_never_reveals_the_owners_addresses(owner: UserInfo) -> None:
    for recipients in ([], ["olivia@acme.com"]):
        detail = check_sender(
            "x@bad.example", recipients, make_owner(accept_reply_all=False)
        ).detail
        assert not any(a in detail for a in owner.addresses)


def test_it_rejects_a_message_without_a_from_address(owner: UserInfo) -> None:
    verdict = check_sender(None, ["olivia@acme.com"], owner)
    assert not verdict.allowed
    assert "no From address" in verdict.detail


@pytest.mark.parametrize(
    ("headers", "envelope", "names"),
    [
        ({"auto-submitted": ["auto-replied"]}, None, "Auto-Submitted: auto-replied"),
        ({"auto-submitted": ["auto-generated; owner-email=x@y"]}, None, "Auto-Submitted"),
        ({}, "<>", "null envelope sender"),
        ({}, "", "null envelope sender"),
        ({"precedence": ["bulk"]}, None, "Precedence: bulk"),
        ({"precedence": ["junk"]}, None, "Precedence: junk"),
        ({"precedence": ["list"]}, None, "Precedence: list"),
        ({"precedence": ["auto_reply"]}, None, "Precedence: auto_reply"),
        ({"list-id": ["<sales.lists.example>"]}, None, "List-Id"),
        ({"list-unsubscribe": ["<mailto:u@x.io>"]}, None, "List-Unsubscribe"),
        ({"x-autoreply": ["yes"]}, None, "X-Autoreply"),
        ({"x-autorespond": ["Out of office"]}, None, "X-Autorespond"),
        ({"x-auto-response-suppress": ["All"]}, None, "X-Auto-Response-Suppress: All"),
        ({"x-auto-response-suppress": ["DR, AutoReply"]}, None, "X-Auto-Response-Suppress"),
        (
            {"content-type": ["multipart/report; report-type=delivery-status"]},
            None,
            "multipart/report",
        ),
    ],
)
def test_it_names_the_header_that_makes_mail_auto_generated(
    headers: dict[str, list[str]], envelope: str | None, names: str
) -> None:
    reason = auto_generated_reason(headers, envelope)
    assert reason is not None
    assert names in reason


@pytest.mark.parametrize(
    ("headers", "envelope"),
    [
        ({}, None),
        ({}, "olivia@acme.com"),
        ({"auto-submitted": ["no"]}, "olivia@acme.com"),
        ({"auto-submitted": ["No"]}, None),
        ({"precedence": ["first-class"]}, None),
        ({"x-auto-response-suppress": ["DR, RN, NRN"]}, None),
        ({"content-type": ["multipart/mixed; boundary=x"]}, None),
    ],
)
def test_ordinary_mail_is_not_auto_generated(
    headers: dict[str, list[str]], envelope: str | None
) -> None:
    assert auto_generated_reason(headers, envelope) is None


def test_an_unknown_envelope_sender_is_not_a_null_sender() -> None:
    assert auto_generated_reason({}, None) is None


def test_bulk_reason_only_looks_at_list_and_bulk_headers() -> None:
    assert bulk_reason({"list-id": ["<x.lists.io>"]}) == "List-Id: <x.lists.io>"
    assert bulk_reason({"auto-submitted": ["auto-replied"]}) is None


def test_a_parsed_message_is_checked_by_its_first_from_and_its_to_and_cc(owner: UserInfo) -> None:
    reply_all = make_message(
        from_=("Jane", "jane@customer.io"), to=[], cc=[("O", "olivia@acme.com")]
    )
    assert check_message_sender(reply_all, owner).rule == "reply_all_from_contact"
    stranger = make_message(from_=("Jane", "jane@customer.io"), to=[("Bob", "bob@partner.io")])
    assert check_message_sender(stranger, owner).rule == "not_allowed"
    nobody = make_message(from_=None)
    assert not check_message_sender(nobody, owner).allowed


def test_the_owners_address_failing_authentication_counts_as_unrecognized(owner: UserInfo) -> None:
    verdict = check_sender(
        "olivia@acme.com", ["olivia@acme.com"], owner, auth_failure="DMARC fail for acme.com"
    )
    assert not verdict.allowed
    assert verdict.rule == "not_allowed"
    assert "DMARC fail for acme.com" in verdict.detail


def test_the_rejection_sentence_is_ascii_for_the_smtp_reply(owner: UserInfo) -> None:
    verdict = check_sender("jörg@bücher.de", [], owner)
    assert not verdict.allowed
    assert verdict.detail.isascii()
    assert "xn--bcher-kva.de" in verdict.detail
