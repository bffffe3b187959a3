"""The address rules (SPEC §4.2), one by one, their order, and their use in decide."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crmdrop.dropbox.decide import decide
from crmdrop.dropbox.plan import DropboxKind, FilingPlan, Outcome, UserInfo
from crmdrop.dropbox.rules import RULES, RuleContext, RuleHit, first_hit
from crmdrop.mail.model import ParsedMessage
from tests.dropbox.dropbox_fakes import DOMAIN, FakeAccount, make_message


def context(
    owner: UserInfo, account: FakeAccount, automated_authors: dict[str, str] | None = None
) -> RuleContext:
    return RuleContext(
        owner=owner,
        account=account,
        dropbox_domain=DOMAIN,
        colleagues=account.colleague_addresses(),
        automated_authors=automated_authors or {},
    )


def hit(address: str, owner: UserInfo, account: FakeAccount) -> RuleHit | None:
    return first_hit(address, context(owner, account))


def run(message: ParsedMessage, owner: UserInfo, account: FakeAccount) -> FilingPlan:
    now = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    return decide(message, DropboxKind.NOTE, owner, account, dropbox_domain=DOMAIN, now=now)


def test_the_rules_apply_in_the_declared_order() -> None:
    assert [r.name for r in RULES] == [
        "owner",
        "colleague",
        "dropbox",
        "system",
        "excluded",
        "automated",
        "invalid",
    ]


def test_it_discards_the_owners_own_address(owner: UserInfo, account: FakeAccount) -> None:
    result = hit("o.owner@acme.com", owner, account)
    assert result is not None
    assert result.rule == "owner"


def test_it_discards_a_colleagues_address(owner: UserInfo, account: FakeAccount) -> None:
    result = hit("colin@acme.com", owner, account)
    assert result == RuleHit("colleague", "an address of a user of this account")


def test_it_discards_any_address_on_the_dropbox_domain_with_the_token_redacted(
    owner: UserInfo, account: FakeAccount
) -> None:
    result = hit("dropbox-secrettoken99-case@drop.example.com", owner, account)
    assert result is not None
    assert result.rule == "dropbox"
    assert "secrettoken99" not in result.detail
    other = hit("support@drop.example.com", owner, account)
    assert other is not None
    assert other.rule == "dropbox"


@pytest.mark.parametrize(
    "address",
    ["postmaster@customer.io", "mailer-daemon@mx.customer.io", "MAILER-DAEMON+x@customer.io"],
)
def test_it_discards_mail_system_addresses(
    owner: UserInfo, account: FakeAccount, address: str
) -> None:
    result = hit(address.lower(), owner, account)
    assert result is not None
    assert result.rule == "system"


def test_it_discards_an_excluded_address_and_names_the_entry(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.exclusions = ["info@customer.io"]
    result = hit("info@customer.io", owner, account)
    assert result is not None
    assert result.rule == "excluded"
    assert "info@customer.io" in result.detail
    assert hit("jane@customer.io", owner, account) is None


def test_it_discards_a_whole_excluded_domain_and_names_the_entry(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.exclusions = ["@mycompany.com"]
    result = hit("anyone@mycompany.com", owner, account)
    assert result is not None
    assert (result.rule, "@mycompany.com" in result.detail) == ("excluded", True)


@pytest.mark.parametrize(
    "address",
    [
        "no-reply@shop.io",
        "noreply@shop.io",
        "no_reply@shop.io",
        "noreply-12345@github.com",
        "do-not-reply@shop.io",
        "donotreply@shop.io",
        "notifications@github.com",
        "notification@shop.io",
        "bounce@shop.io",
        "bounces+abc=x.io@mailer.io",
        "bounce-7781@mailer.io",
        "mailer@shop.io",
    ],
)
def test_it_discards_automated_senders_when_the_account_asks(
    owner: UserInfo, account: FakeAccount, address: str
) -> None:
    account.discard_automated = True
    result = hit(address, owner, account)
    assert result is not None
    assert result.rule == "automated"


def test_it_keeps_automated_looking_senders_when_the_account_does_not_ask(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.discard_automated = False
    assert hit("noreply@shop.io", owner, account) is None
    assert hit("notifications@github.com", owner, account) is None


@pytest.mark.parametrize(
    "address", ["norman@shop.io", "replies@shop.io", "notify-me-not@shop.io", "mailers@shop.io"]
)
def test_it_keeps_people_whose_names_merely_resemble_automated_ones(
    owner: UserInfo, account: FakeAccount, address: str
) -> None:
    account.discard_automated = True
    assert hit(address, owner, account) is None


def test_the_author_of_a_bulk_message_is_automated_when_the_account_asks(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.discard_automated = True
    message = make_message(
        from_=("Shop News", "news@shop.io"),
        to=[("Olivia", "olivia@acme.com")],
        headers={"List-Unsubscribe": ["<mailto:unsub@shop.io>"]},
    )
    plan = run(message, owner, account)
    (news,) = [d for d in plan.addresses if d.address == "news@shop.io"]
    assert (news.kept, news.rule) == (False, "automated")
    assert "List-Unsubscribe" in news.detail
    assert plan.outcome is Outcome.NO_CONTACT


def test_the_author_of_a_bulk_message_is_a_contact_when_the_account_does_not_ask(
    owner: UserInfo, account: FakeAccount
) -> None:
    message = make_message(
        from_=("Shop News", "news@shop.io"),
        to=[("Olivia", "olivia@acme.com")],
        headers={"Precedence": ["bulk"]},
    )
    plan = run(message, owner, account)
    assert [c.address for c in plan.contacts] == ["news@shop.io"]


def test_other_people_on_a_mailing_list_message_stay_contacts(
    owner: UserInfo, account: FakeAccount
) -> None:
    account.discard_automated = True
    message = make_message(
        from_=("Jane", "jane@customer.io"),
        to=[("List", "team@lists.customer.io")],
        cc=[("Olivia", "olivia@acme.com"), ("Bob", "bob@partner.io")],
        headers={"List-Id": ["<team.lists.customer.io>"]},
    )
    plan = run(message, owner, account)
    assert [c.address for c in plan.contacts] == ["team@lists.customer.io", "bob@partner.io"]


@pytest.mark.parametrize("address", ["jane@localhost", "a..b@customer.io", "jane@", "@customer.io"])
def test_it_discards_implausible_addresses(
    owner: UserInfo, account: FakeAccount, address: str
) -> None:
    result = hit(address, owner, account)
    assert result is not None
    assert result.rule == "invalid"


def test_it_keeps_an_ordinary_address_as_a_contact(owner: UserInfo, account: FakeAccount) -> None:
    assert hit("jane@customer.io", owner, account) is None
    assert hit("jane@bücher.de", owner, account) is None


def test_the_first_matching_rule_is_the_one_recorded(owner: UserInfo, account: FakeAccount) -> None:
    account.exclusions = ["@acme.com"]
    result = hit("olivia@acme.com", owner, account)
    assert result is not None
    assert result.rule == "owner"


def test_decide_accepts_a_different_rule_list(owner: UserInfo, account: FakeAccount) -> None:
    class Everything:
        name = "everything"

        def check(self, address: str, ctx: RuleContext) -> str | None:
            return "discard all"

    now = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    plan = decide(
        make_message(),
        DropboxKind.NOTE,
        owner,
        account,
        dropbox_domain=DOMAIN,
        now=now,
        rules=[Everything()],
    )
    assert {d.rule for d in plan.addresses} == {"everything"}
    assert plan.outcome is Outcome.NO_CONTACT


def test_a_tagged_spelling_of_a_users_address_is_still_that_user(
    owner: UserInfo, account: FakeAccount
) -> None:
    mine = hit("olivia+crm@acme.com", owner, account)
    theirs = hit("colin+news@acme.com", owner, account)
    assert mine == RuleHit("owner", "one of the dropbox owner's own addresses (with a +tag)")
    assert theirs == RuleHit("colleague", "an address of a user of this account (with a +tag)")
    assert hit("olivia.other+crm@acme.com", owner, account) is None
