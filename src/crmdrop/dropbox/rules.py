"""Address rules as data (SPEC §4.2): which addresses are not contacts, and why.

Each rule is small, has a stable `name` and one `check(address, ctx)` that returns a
sentence when it discards the address. `RULES` declares the order; the first hit is
recorded on the address's decision (SPEC §4.6), and an address no rule discards is a
contact. The idea is GNU Mailman's `rules/` + `chains/builtin.py`: adding a rule is adding
one class to the tuple, and the processing record always names the rule that decided.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from crmdrop.dropbox.address import is_dropbox_domain, redact
from crmdrop.dropbox.plan import AccountView, UserInfo
from crmdrop.mail.addresses import is_plausible_address

__all__ = [
    "KEPT",
    "RULES",
    "AutomatedRule",
    "ColleagueRule",
    "DropboxRule",
    "ExcludedRule",
    "InvalidRule",
    "OwnerRule",
    "Rule",
    "RuleContext",
    "RuleHit",
    "SystemRule",
    "first_hit",
]

KEPT = "contact"  # the rule name recorded for an address that survives every rule


@dataclass(frozen=True)
class RuleContext:
    """What rules may consult: the owner, the account, and facts from the message.

    `automated_authors` maps an author address to the header that shows its message is
    bulk or mailing-list mail (see `senders.bulk_reason`).
    """

    owner: UserInfo
    account: AccountView
    dropbox_domain: str
    colleagues: frozenset[str]
    automated_authors: Mapping[str, str] = field(default_factory=dict)


class Rule(Protocol):
    """One named reason an address is not a contact."""

    name: str

    def check(self, address: str, ctx: RuleContext) -> str | None:
        """A sentence naming why `address` is discarded, or None to let it pass."""


@dataclass(frozen=True)
class RuleHit:
    rule: str
    detail: str


def _local(address: str) -> str:
    """The local part without a `+tag`."""
    return address.rpartition("@")[0].partition("+")[0]


def _untagged(address: str) -> str:
    """`address` without a `+tag`: olivia+crm@acme.com → olivia@acme.com."""
    local, at, domain = address.rpartition("@")
    return local.partition("+")[0] + at + domain


def _among(address: str, addresses: frozenset[str]) -> str | None:
    """How `address` is one of `addresses`: "" exactly, " (with a +tag)", or None.

    A tagged spelling of a user's address is still that user: discarding it is the safe
    direction (it never makes a colleague into a contact).
    """
    if address in addresses:
        return ""
    if "+" in address and _untagged(address) in addresses:
        return " (with a +tag)"
    return None


class OwnerRule:
    name = "owner"

    def check(self, address: str, ctx: RuleContext) -> str | None:
        how = _among(address, ctx.owner.addresses)
        return None if how is None else f"one of the dropbox owner's own addresses{how}"


class ColleagueRule:
    name = "colleague"

    def check(self, address: str, ctx: RuleContext) -> str | None:
        how = _among(address, ctx.colleagues)
        return None if how is None else f"an address of a user of this account{how}"


class DropboxRule:
    name = "dropbox"

    def check(self, address: str, ctx: RuleContext) -> str | None:
        if is_dropbox_domain(address, ctx.dropbox_domain):
            return f"{redact(address)} is on the dropbox domain"
        return None


SYSTEM_LOCAL_PARTS = frozenset(
    {"postmaster", "mailer-daemon", "mailer_daemon", "mailerdaemon", "hostmaster"}
)


class SystemRule:
    name = "system"

    def check(self, address: str, ctx: RuleContext) -> str | None:
        local = _local(address)
        if local in SYSTEM_LOCAL_PARTS:
            return f"{local}@ is a mail system address"
        return None


class ExcludedRule:
    name = "excluded"

    def check(self, address: str, ctx: RuleContext) -> str | None:
        entry = ctx.account.is_excluded(address)
        if entry is not None:
            return f"on the account's exclusion list ({entry})"
        return None


# Local parts of senders that are machines, not people. Prefix forms like
# "noreply-1234@" and "bounces+abc@" are common, so those match as prefixes.
AUTOMATED_LOCAL = re.compile(
    r"""^(?:
        (?:no|do[-_.]?not)[-_.]?reply(?:[-_.].*)?
      | notifications?
      | bounces?.*
      | mailer
      | auto[-_.]?(?:reply|responder|confirm)
    )$""",
    re.VERBOSE,
)


class AutomatedRule:
    """Machine senders; only when the account turns `discard_automated` on."""

    name = "automated"

    def check(self, address: str, ctx: RuleContext) -> str | None:
        if not ctx.account.discard_automated:
            return None
        if AUTOMATED_LOCAL.match(_local(address)):
            return f"{_local(address)}@ is an automated sender"
        reason = ctx.automated_authors.get(address)
        if reason is not None:
            return f"the author of bulk or mailing-list mail ({reason})"
        return None


class InvalidRule:
    name = "invalid"

    def check(self, address: str, ctx: RuleContext) -> str | None:
        if not is_plausible_address(address):
            return "not a plausible email address"
        return None


RULES: tuple[Rule, ...] = (
    OwnerRule(),
    ColleagueRule(),
    DropboxRule(),
    SystemRule(),
    ExcludedRule(),
    AutomatedRule(),
    InvalidRule(),
)


def first_hit(address: str, ctx: RuleContext, rules: Sequence[Rule] = RULES) -> RuleHit | None:
    """The first rule (in declared order) that discards `address`, or None: a contact."""
    for rule in rules:
        detail = rule.check(address, ctx)
        if detail is not None:
            return RuleHit(rule.name, detail)
    return None
