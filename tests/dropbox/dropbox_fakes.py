"""Test doubles for the dropbox package: an in-memory AccountView and a message factory.

Imported as `tests.dropbox.dropbox_fakes`, like `tests.support` at the top level.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from crmdrop.dropbox.plan import ContactMatch, RecordRef, UserInfo
from crmdrop.mail.model import Attachment, ForwardedBlock, FoundAddress, Mailbox, ParsedMessage

DOMAIN = "drop.example.com"
ACCOUNT_ID = 1
OTHER_ACCOUNT_ID = 2


def make_owner(**changes: object) -> UserInfo:
    values: dict[str, object] = {
        "id": 7,
        "name": "Olivia Owner",
        "signup_email": "olivia@acme.com",
        "addresses": frozenset({"olivia@acme.com", "o.owner@acme.com", "olivia.home@gmail.com"}),
        "verified": frozenset({"olivia@acme.com", "olivia.home@gmail.com"}),
        "timezone": "Europe/Berlin",
        "accept_reply_all": True,
    }
    values.update(changes)
    return UserInfo(**values)  # type: ignore[arg-type]


@dataclass
class FakeAccount:
    """An AccountView over dicts, recording the questions decide asks."""

    account_id: int = ACCOUNT_ID
    file_under_companies: bool = False
    discard_automated: bool = False
    colleagues: set[str] = field(
        default_factory=lambda: {
            "olivia@acme.com",
            "o.owner@acme.com",
            "olivia.home@gmail.com",
            "colin@acme.com",
        }
    )
    exclusions: list[str] = field(default_factory=list)
    contacts: dict[str, ContactMatch] = field(default_factory=dict)
    company_domains: dict[str, int] = field(default_factory=dict)
    contact_companies: dict[int, int] = field(default_factory=dict)
    records: dict[tuple[str, int], RecordRef] = field(default_factory=dict)
    thread_record_map: dict[str, list[RecordRef]] = field(default_factory=dict)
    thread_contact_map: dict[str, list[ContactMatch]] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)
    domain_lookups: list[str] = field(default_factory=list)

    def colleague_addresses(self) -> frozenset[str]:
        return frozenset(self.colleagues)

    def is_excluded(self, address: str) -> str | None:
        for entry in self.exclusions:
            if entry.startswith("@"):
                if address.endswith(entry):
                    return entry
            elif address == entry:
                return entry
        return None

    def find(self, address: str) -> ContactMatch | None:
        return self.contacts.get(address)

    def company_for_domain(self, domain: str) -> int | None:
        self.domain_lookups.append(domain)
        return self.company_domains.get(domain)

    def company_of(self, contact_id: int) -> int | None:
        return self.contact_companies.get(contact_id)

    def find_record(self, kind: str, number: int) -> RecordRef | None:
        return self.records.get((kind, number))

    def thread_records(self, message_ids: list[str]) -> list[RecordRef]:
        return [r for mid in message_ids for r in self.thread_record_map.get(mid, [])]

    def thread_contacts(self, message_ids: list[str]) -> list[ContactMatch]:
        return [c for mid in message_ids for c in self.thread_contact_map.get(mid, [])]

    def filed_note(self, message_key: str) -> int | None:
        return self.notes.get(message_key)


Person = tuple[str, str]  # (display name, address)


def mailbox(person: Person | None) -> Mailbox | None:
    return None if person is None else Mailbox(person[0], person[1])


def forward_block(
    from_: Person | None = ("Jane Doe", "jane@customer.io"),
    *,
    to: Iterable[Person] = (("Olivia Owner", "olivia@acme.com"),),
    cc: Iterable[Person] = (),
    subject: str | None = "Pricing question",
    body: str = "Could you send the price list?",
    date: datetime | None = datetime(2026, 3, 2, 9, 15, tzinfo=UTC),
    kind: str = "forward",
    depth: int = 1,
) -> ForwardedBlock:
    return ForwardedBlock(
        depth=depth,
        kind=kind,
        from_=mailbox(from_),
        to=tuple(Mailbox(n, a) for n, a in to),
        cc=tuple(Mailbox(n, a) for n, a in cc),
        date=date,
        date_text=date.isoformat() if date else None,
        subject=subject,
        body=body,
        client="gmail",
        language="en",
    )


def make_message(
    *,
    from_: Person | None = ("Olivia Owner", "olivia@acme.com"),
    to: Iterable[Person] = (("Jane Doe", "jane@customer.io"),),
    cc: Iterable[Person] = (),
    subject: str = "Our meeting",
    text: str = "Hi Jane, thanks for the meeting.",
    own_text: str | None = None,
    message_id: str | None = "<m1@mail.acme.com>",
    date: datetime | None = datetime(2026, 3, 3, 10, 0, tzinfo=UTC),
    headers: dict[str, list[str]] | None = None,
    forwarded: Iterable[ForwardedBlock] = (),
    attached: Iterable[ParsedMessage] = (),
    attachments: Iterable[str] = (),
    body_addresses: Iterable[Person] = (),
    in_reply_to: Iterable[str] = (),
    references: Iterable[str] = (),
    content_hash: str = "abc123",
    dropbox: str | None = "dropbox-tok@drop.example.com",
) -> ParsedMessage:
    """A ParsedMessage as the parser would give it; addresses are collected from the parts.

    `dropbox` adds the dropbox address to Cc (as a user CC'ing it would); None leaves it out.
    """
    to_list = [Mailbox(n, a) for n, a in to]
    cc_list = [Mailbox(n, a) for n, a in cc]
    if dropbox is not None:
        cc_list.append(Mailbox("", dropbox))
    from_list = [Mailbox(*from_)] if from_ is not None else []
    found: list[FoundAddress] = []
    for where, boxes in (
        ("header:from", from_list),
        ("header:to", to_list),
        ("header:cc", cc_list),
    ):
        found += [FoundAddress(m.address, m.name, where) for m in boxes if m.address]
    found += [FoundAddress(a, n, "body:text") for n, a in body_addresses]
    blocks = list(forwarded)
    for i, block in enumerate(blocks, start=1):
        for where, boxes in (
            ("from", [block.from_] if block.from_ else []),
            ("to", list(block.to)),
            ("cc", list(block.cc)),
        ):
            found += [
                FoundAddress(m.address, m.name, f"forwarded[{i}]:{where}")
                for m in boxes
                if m.address
            ]
    inner = list(attached)
    for i, message in enumerate(inner, start=1):
        found += [
            FoundAddress(f.address, f.name, f"attached[{i}]:{f.where}") for f in message.addresses
        ]
    return ParsedMessage(
        message_id=message_id,
        in_reply_to=list(in_reply_to),
        references=list(references),
        subject=subject,
        date=date,
        from_=from_list,
        sender=[],
        reply_to=[],
        to=to_list,
        cc=cc_list,
        headers={k.lower(): v for k, v in (headers or {}).items()},
        text=text,
        html=None,
        own_text=text if own_text is None else own_text,
        forwarded=blocks,
        attachments=[Attachment(name, "application/octet-stream", b"") for name in attachments],
        attached=inner,
        addresses=found,
        content_hash=content_hash,
    )
