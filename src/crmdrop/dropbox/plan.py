"""The FilingPlan: what deciding returns, and what the processing record shows.

`decide` (pure) builds a plan from a ParsedMessage, the dropbox it reached and a
read-only AccountView; `store.apply` carries it out in one transaction; `crmdrop
explain` prints it. The plan *is* the processing record (SPEC §4.6, §6.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum, StrEnum
from typing import Any, Protocol


class DropboxKind(str, Enum):  # noqa: UP042 - lead's choice; StrEnum changes str()
    """The six dropbox addresses of a user (SPEC §2.1)."""

    NOTE = "note"
    CASE = "case"
    OPP = "opp"
    TASK = "task"
    TODAY = "today"
    TOMORROW = "tomorrow"


class Outcome(StrEnum):
    """How a delivery ended, once decided (also the delivery's stored status)."""

    FILED = "filed"  # a note (and maybe case/opp/task) was filed
    DUPLICATE = "duplicate"  # the same message was filed before: only new links added
    NO_CONTACT = "no_contact"  # nothing to file under: error reply to the user (SPEC §4.5)
    TASK_ONLY = "task_only"  # a task dropbox with no contact: task made, no note


@dataclass(frozen=True)
class AddressDecision:
    """One address, where it was seen, and the rule that kept or discarded it."""

    address: str
    name: str
    where: tuple[str, ...]
    kept: bool
    rule: str  # e.g. "contact", "owner", "colleague", "excluded:@acme.com", "dropbox", "system"
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "name": self.name,
            "where": list(self.where),
            "kept": self.kept,
            "rule": self.rule,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class ContactAction:
    """A kept address: an existing contact/company to link, or a contact to create."""

    address: str
    name: str
    action: str  # "link_contact" | "link_company" | "create_contact"
    contact_id: int | None = None
    company_id: int | None = None
    company_for_new: int | None = None  # company a created contact joins (domain match)
    why: str = ""  # "address" (found by it), "new" (created), "thread" (SPEC §5.2)

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "name": self.name,
            "action": self.action,
            "contact_id": self.contact_id,
            "company_id": self.company_id,
            "company_for_new": self.company_for_new,
            "why": self.why,
        }


@dataclass(frozen=True)
class RecordAction:
    """A case or opportunity to link (by reference) or to create."""

    kind: str  # "case" | "opportunity"
    action: str  # "link" | "create"
    record_id: int | None = None
    ref: str | None = None  # e.g. "CA12" when linking
    title: str | None = None  # when creating
    why: str = ""  # "reference #CA12", "thread", "new from -case@ dropbox", ...

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "action": self.action,
            "record_id": self.record_id,
            "ref": self.ref,
            "title": self.title,
            "why": self.why,
        }


@dataclass(frozen=True)
class TaskAction:
    title: str
    description: str
    due: date | None
    due_kind: str  # "none" | "today" | "tomorrow"
    timezone: str

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "description": self.description,
            "due": self.due.isoformat() if self.due else None,
            "due_kind": self.due_kind,
            "timezone": self.timezone,
        }


@dataclass(frozen=True)
class ChainPerson:
    name: str
    email: str | None

    def to_json(self) -> dict[str, str | None]:
        return {"name": self.name, "email": self.email}

    @classmethod
    def from_json(cls, data: Any) -> ChainPerson | None:
        if not isinstance(data, dict):
            return None
        email = data.get("email")
        return cls(str(data.get("name") or ""), str(email) if email else None)


@dataclass(frozen=True)
class ChainMessage:
    """One message of a forwarded thread, as its header block or lead-in gives it."""

    author: ChainPerson | None
    date: datetime | None
    to: tuple[ChainPerson, ...]
    cc: tuple[ChainPerson, ...]
    subject: str | None
    text: str
    kind: str  # "forward" | "reply": how the block was written

    def to_json(self) -> dict[str, object]:
        return {
            "author": self.author.to_json() if self.author else None,
            "date": self.date.isoformat() if self.date else None,
            "to": [p.to_json() for p in self.to],
            "cc": [p.to_json() for p in self.cc],
            "subject": self.subject,
            "text": self.text,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChainMessage:
        """The message as a note stores it (`to_json`)."""

        def people(key: str) -> tuple[ChainPerson, ...]:
            found = (ChainPerson.from_json(p) for p in data.get(key) or ())
            return tuple(p for p in found if p is not None)

        date_text = data.get("date")
        return cls(
            author=ChainPerson.from_json(data.get("author")),
            date=datetime.fromisoformat(date_text) if date_text else None,
            to=people("to"),
            cc=people("cc"),
            subject=data.get("subject"),
            text=str(data.get("text") or ""),
            kind=str(data.get("kind") or "forward"),
        )


@dataclass(frozen=True)
class NoteDraft:
    """The note as it will be filed (SPEC §4.4)."""

    subject: str
    body: str
    own_text: str  # the forwarder's own words, kept apart for a forward
    author_name: str
    author_email: str | None
    date: datetime | None
    direction: str  # "from_user" | "to_user"
    is_forward: bool
    attachment_names: tuple[str, ...]
    chain: tuple[ChainMessage, ...] = ()  # every forwarded/quoted message, newest first

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "body": self.body,
            "own_text": self.own_text,
            "author_name": self.author_name,
            "author_email": self.author_email,
            "date": self.date.isoformat() if self.date else None,
            "direction": self.direction,
            "is_forward": self.is_forward,
            "attachment_names": list(self.attachment_names),
            "chain": [m.to_json() for m in self.chain],
        }


@dataclass(frozen=True)
class ForwardedEntry:
    """A forwarded/quoted block (or an attached message) as the record and `explain` show it.

    Addresses are already redacted (a dropbox address loses its token). The JSON keys are
    those of the processing records stored so far (`from`, not `from_`).
    """

    depth: int
    kind: str  # "forward" | "reply" | "attached"
    from_: str | None
    to: tuple[str | None, ...]
    cc: tuple[str | None, ...]
    date: datetime | None
    date_text: str | None
    subject: str | None
    client: str
    language: str

    def to_json(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "kind": self.kind,
            "from": self.from_,
            "to": list(self.to),
            "cc": list(self.cc),
            "date": self.date.isoformat() if self.date else None,
            "date_text": self.date_text,
            "subject": self.subject,
            "client": self.client,
            "language": self.language,
        }


@dataclass(frozen=True)
class FilingPlan:
    """Every decision taken for one delivery, in order. Frozen: once `decide` returns, a
    correction (a duplicate found at apply time) is a new plan (`dataclasses.replace`), and
    nobody appends to its lists."""

    outcome: Outcome
    dropbox: DropboxKind
    message_key: str  # Message-ID, or sha256 of the content when there is none
    addresses: list[AddressDecision] = field(default_factory=list)
    contacts: list[ContactAction] = field(default_factory=list)
    note: NoteDraft | None = None
    records: list[RecordAction] = field(default_factory=list)
    task: TaskAction | None = None
    notices: list[str] = field(
        default_factory=list
    )  # e.g. "reference #CA9 is of another account: ignored"
    forwarded: list[ForwardedEntry] = field(default_factory=list)  # blocks found, outermost first
    reason: str = ""  # one line for the processing record
    note_id: int | None = None  # the existing note, when outcome is DUPLICATE
    reply_to: str | None = None  # where the error reply goes (SPEC §4.5, §6.4); None: no reply
    auto_generated: str | None = None  # why the message counts as auto-generated (SPEC §3.4)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (dates as ISO strings, enums as values), keys in field order.
        Written out per class: the generic walk over `fields()` took ≈ 80 µs a plan
        (docs/performance.md, session 6)."""
        return {
            "outcome": self.outcome.value,
            "dropbox": self.dropbox.value,
            "message_key": self.message_key,
            "addresses": [a.to_json() for a in self.addresses],
            "contacts": [c.to_json() for c in self.contacts],
            "note": self.note.to_json() if self.note else None,
            "records": [r.to_json() for r in self.records],
            "task": self.task.to_json() if self.task else None,
            "notices": list(self.notices),
            "forwarded": [f.to_json() for f in self.forwarded],
            "reason": self.reason,
            "note_id": self.note_id,
            "reply_to": self.reply_to,
            "auto_generated": self.auto_generated,
        }


@dataclass(frozen=True)
class UserInfo:
    """The dropbox owner as decide needs them."""

    id: int
    name: str
    signup_email: str
    addresses: frozenset[str]  # signup + additional, normalized
    verified: frozenset[str]  # signup + verified additional addresses (replies go only there)
    timezone: str
    accept_reply_all: bool


@dataclass(frozen=True)
class ContactMatch:
    kind: str  # "contact" | "company"
    id: int
    name: str
    company_id: int | None = None


@dataclass(frozen=True)
class RecordRef:
    """A case or opportunity found by reference number."""

    kind: str  # "case" | "opportunity"
    id: int
    ref: str
    account_id: int


class AccountView(Protocol):
    """Read-only questions decide asks of an account (implemented by store/)."""

    account_id: int
    file_under_companies: bool
    discard_automated: bool

    def colleague_addresses(self) -> frozenset[str]:
        """Every address of every user of the account (signup + additional)."""

    def is_excluded(self, address: str) -> str | None:
        """The exclusion entry that covers `address` (exact or @domain), or None."""

    def find(self, address: str) -> ContactMatch | None:
        """A contact or company with this address (case-insensitive), or None."""

    def company_for_domain(self, domain: str) -> int | None:
        """The one company whose domain is `domain`, or None."""

    def company_of(self, contact_id: int) -> int | None:
        """The company a contact belongs to, or None."""

    def find_record(self, kind: str, number: int) -> RecordRef | None:
        """A case/opportunity of this account by reference number, or None."""

    def thread_records(self, message_ids: list[str]) -> list[RecordRef]:
        """Cases/opportunities that notes with these Message-IDs were filed to."""

    def thread_contacts(self, message_ids: list[str]) -> list[ContactMatch]:
        """Contacts that notes with these Message-IDs were filed under."""

    def filed_note(self, message_key: str) -> int | None:
        """The note already filed in this account for this message (SPEC §6.2), or None."""
