"""decide: one delivery's facts in, a FilingPlan out (SPEC §4, §5). Pure: no I/O.

The order is written down and followed (cf. Odoo's `message_route`):

1. identity — the message key (SPEC §6.2) and whether this account filed it already;
2. addresses — every address gets one decision from the rules in `rules.RULES`;
3. contacts — kept addresses are found among contacts/companies or created, and contacts
   of the thread the message replies to (SPEC §5.2) are added;
4. the note — for a forward, the forwarded message's author, date, subject and body;
5. records — `#CA<n>`/`#CO<n>` references, thread records, a new case/opportunity
   from the `-case@`/`-opp@` dropboxes (SPEC §5.1);
6. the task for the task dropboxes (SPEC §5.3);
7. the outcome and a one-line reason.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmdrop.dropbox.address import redact, redact_text
from crmdrop.dropbox.chain import chain_of, in_zone
from crmdrop.dropbox.names import contact_name, is_free_mail
from crmdrop.dropbox.plan import (
    AccountView,
    AddressDecision,
    ContactAction,
    ContactMatch,
    DropboxKind,
    FilingPlan,
    ForwardedEntry,
    NoteDraft,
    Outcome,
    RecordAction,
    TaskAction,
    UserInfo,
)
from crmdrop.dropbox.rules import KEPT, RULES, Rule, RuleContext, first_hit
from crmdrop.dropbox.senders import auto_generated_reason, bulk_reason
from crmdrop.dropbox.subjects import strip_prefixes, title_from_subject
from crmdrop.mail.addresses import normalize_address
from crmdrop.mail.model import Mailbox, ParsedMessage

__all__ = [
    "TASK_KINDS",
    "decide",
    "find_references",
    "message_key",
    "normalize_message_id",
    "task_due",
]

TASK_KINDS = frozenset({DropboxKind.TASK, DropboxKind.TODAY, DropboxKind.TOMORROW})
_RECORD_KIND_OF_DROPBOX = {DropboxKind.CASE: "case", DropboxKind.OPP: "opportunity"}
_RECORD_KIND_OF_PREFIX = {"CA": "case", "CO": "opportunity"}
# "#" first, then "not after a word character or another #" looked back on: a pattern
# that starts with a literal is searched for that character (25x faster on prose).
_REFERENCE = re.compile(r"#(?<![\w#]#)(CA|CO)0*(\d{1,9})(?!\w)", re.IGNORECASE)


# --- 1. identity -------------------------------------------------------------------------

_SPACE = re.compile(r"\s")  # for str patterns, exactly the characters `str.isspace` takes


def normalize_message_id(value: str) -> str | None:
    """A Message-ID as the store keys it: ``<local@host>``, lowercased; None when empty.

    Lowercased because clients and list servers re-case them in `References:`; a
    collision from case alone is not a real risk. Thread look-ups (`In-Reply-To`,
    `References`) use the same form, so the store must key filed notes by it too.
    """
    core = value.strip().strip("<>").strip()
    if not core or _SPACE.search(core):
        return None
    return f"<{core.lower()}>"


def message_key(parsed: ParsedMessage) -> str:
    """The identity under which a message is filed once per account (SPEC §6.2).

    The normalized Message-ID; without one, ``sha256:<content hash>`` from the parser;
    and should the parser have no hash, one over the facts decide sees.
    """
    if parsed.message_id:
        mid = normalize_message_id(parsed.message_id)
        if mid is not None:
            return mid
    if parsed.content_hash:
        return f"sha256:{parsed.content_hash}"
    facts = "\x00".join(
        [
            parsed.subject,
            parsed.date.isoformat() if parsed.date else "",
            ",".join(m.address or m.name for m in parsed.from_),
            parsed.text,
        ]
    )
    return "sha256:" + hashlib.sha256(facts.encode("utf-8", "surrogatepass")).hexdigest()


# --- 2. addresses ------------------------------------------------------------------------


@dataclass
class _Seen:
    address: str
    name: str
    where: list[str]
    name_rank: int


def _name_rank(where: str) -> int:
    """How much to trust the name found at `where`: headers, then forwarded blocks, then text."""
    if where.startswith("header:"):
        return 0
    if where.startswith("forwarded["):
        return 1
    if where.startswith("attached[") and ":body:" not in where:
        return 2
    return 3


def _merge_addresses(parsed: ParsedMessage) -> list[_Seen]:
    """One entry per normalized address, first-seen order, every `where` kept.

    The name is the one from the most trusted place that gives one (a header's display
    name beats a name guessed next to an address in the body).
    """
    seen: dict[str, _Seen] = {}
    for found in parsed.addresses:
        addr = normalize_address(found.address)
        if not addr:
            continue
        name = found.name.strip()
        rank = _name_rank(found.where) if name else 99
        entry = seen.get(addr)
        if entry is None:
            seen[addr] = _Seen(addr, name, [found.where], rank)
            continue
        if found.where not in entry.where:
            entry.where.append(found.where)
        if rank < entry.name_rank:
            entry.name, entry.name_rank = name, rank
    return list(seen.values())


def looked_up_addresses(parsed: ParsedMessage) -> list[str]:
    """Every address `decide` may look up for this message (normalized): a batch loads
    them at once (`SqlAccountView.prefetch`)."""
    return [seen.address for seen in _merge_addresses(parsed)]


def _bulk_authors(parsed: ParsedMessage) -> dict[str, str]:
    """Authors of this message and of attached ones whose headers say bulk/list mail."""
    authors: dict[str, str] = {}
    for message in (parsed, *parsed.attached):
        reason = bulk_reason(message.headers)
        if reason is None:
            continue
        for mailbox in message.from_:
            if mailbox.address:
                authors.setdefault(normalize_address(mailbox.address), reason)
    return authors


def _decide_addresses(
    seen: list[_Seen], ctx: RuleContext, rules: Iterable[Rule]
) -> list[AddressDecision]:
    decisions = []
    rule_list = list(rules)
    for entry in seen:
        hit = first_hit(entry.address, ctx, rule_list)
        is_dropbox = hit is not None and hit.rule == "dropbox"
        decisions.append(
            AddressDecision(
                # The record is shown and mailed to users: never a dropbox's secret token.
                address=redact(entry.address) if is_dropbox else entry.address,
                name=entry.name,
                where=tuple(entry.where),
                kept=hit is None,
                rule=KEPT if hit is None else hit.rule,
                detail="" if hit is None else hit.detail,
            )
        )
    return decisions


# --- 3. contacts -------------------------------------------------------------------------


def _company_of(match: ContactMatch, account: AccountView) -> int | None:
    if match.company_id is not None:
        return match.company_id
    return account.company_of(match.id)


def _link(match: ContactMatch, address: str, account: AccountView, why: str) -> ContactAction:
    if match.kind == "company":
        return ContactAction(
            address=address,
            name=match.name,
            action="link_company",
            company_id=match.id,
            why=why,
        )
    return ContactAction(
        address=address,
        name=match.name,
        action="link_contact",
        contact_id=match.id,
        company_id=_company_of(match, account) if account.file_under_companies else None,
        why=why,
    )


def _contact_actions(
    decisions: list[AddressDecision], thread: list[ContactMatch], account: AccountView
) -> list[ContactAction]:
    """Kept addresses found or created, then thread contacts; each contact/company once."""
    actions: list[ContactAction] = []
    linked: set[tuple[str, int]] = set()
    for decision in decisions:
        if not decision.kept:
            continue
        match = account.find(decision.address)
        if match is not None:
            if (match.kind, match.id) in linked:
                continue
            linked.add((match.kind, match.id))
            actions.append(_link(match, decision.address, account, "address"))
            continue
        domain = decision.address.rpartition("@")[2]
        company = None if is_free_mail(domain) else account.company_for_domain(domain)
        actions.append(
            ContactAction(
                address=decision.address,
                name=contact_name(decision.name, decision.address),
                action="create_contact",
                company_id=company if account.file_under_companies else None,
                company_for_new=company,
                why="new",
            )
        )
    for match in thread:
        if (match.kind, match.id) in linked:
            continue
        linked.add((match.kind, match.id))
        actions.append(_link(match, "", account, "thread"))
    return actions


# --- 4. the note -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Original:
    """The message the note is about: the forwarded one for a forward, else this one."""

    author: Mailbox | None
    date: datetime | None
    subject: str
    body: str
    own_text: str
    is_forward: bool
    attached: ParsedMessage | None = None


def _original(parsed: ParsedMessage) -> _Original:
    if parsed.forwarded and parsed.forwarded[0].kind == "forward":
        # The outermost block that names an author: a bare separator line names none.
        block = next(
            (b for b in parsed.forwarded if b.kind == "forward" and b.from_ and b.from_.address),
            parsed.forwarded[0],
        )
        return _Original(
            author=block.from_,
            date=block.date,
            # a lead-in names no subject: the one the forward has, without its "Fwd:"
            subject=block.subject if block.subject is not None else strip_prefixes(parsed.subject),
            body=block.body.strip(),
            own_text=parsed.own_text.strip(),
            is_forward=True,
        )
    if not parsed.forwarded and len(parsed.attached) == 1:
        inner = parsed.attached[0]
        return _Original(
            author=inner.from_[0] if inner.from_ else None,
            date=inner.date,
            subject=inner.subject,
            body=(inner.own_text or inner.text).strip(),
            own_text=parsed.own_text.strip(),
            is_forward=True,
            attached=inner,
        )
    return _Original(
        author=parsed.from_[0] if parsed.from_ else None,
        date=parsed.date,
        subject=parsed.subject,
        body=(parsed.own_text or parsed.text).strip(),
        own_text="",
        is_forward=False,
    )


def _note(
    parsed: ParsedMessage, original: _Original, owner: UserInfo, received: datetime
) -> NoteDraft:
    """The note; its date is the original's, else this message's, else the time it was
    received — never none (a message without a `Date:` header still happened)."""
    author = original.author
    owner_addresses = owner.addresses
    email = normalize_address(author.address) if author and author.address else None
    if author is None:
        name = ""
    elif email is not None:
        name = contact_name(author.name, email)
    else:
        name = author.name.strip()
    return NoteDraft(
        subject=original.subject,
        body=original.body,
        own_text=original.own_text,
        author_name=name,
        author_email=email,
        date=in_zone(original.date or parsed.date, owner.timezone) or received,
        direction="from_user" if email is not None and email in owner_addresses else "to_user",
        is_forward=original.is_forward,
        attachment_names=tuple(a.filename for a in parsed.attachments if a.filename),
        chain=chain_of(parsed, owner.timezone),
    )


def _mailbox_text(mailbox: Mailbox | None) -> str | None:
    """For the record: a dropbox address in it is shown without its secret token."""
    if mailbox is None:
        return None
    if mailbox.name and mailbox.address:
        return redact_text(f"{mailbox.name} <{mailbox.address}>")
    return redact_text(mailbox.address or mailbox.name)


def _forwarded_entries(parsed: ParsedMessage, original: _Original) -> list[ForwardedEntry]:
    """The forwarded/quoted blocks found, outermost first, for the record and `explain`."""
    blocks = [
        ForwardedEntry(
            depth=b.depth,
            kind=b.kind,
            from_=_mailbox_text(b.from_),
            to=tuple(_mailbox_text(m) for m in b.to),
            cc=tuple(_mailbox_text(m) for m in b.cc),
            date=b.date,
            date_text=b.date_text,
            subject=b.subject,
            client=b.client,
            language=b.language,
        )
        for b in parsed.forwarded
    ]
    inner = original.attached
    if inner is not None:
        blocks.append(
            ForwardedEntry(
                depth=1,
                kind="attached",
                from_=_mailbox_text(inner.from_[0]) if inner.from_ else None,
                to=tuple(_mailbox_text(m) for m in inner.to),
                cc=tuple(_mailbox_text(m) for m in inner.cc),
                date=inner.date,
                date_text=inner.header("date"),
                subject=inner.subject,
                client="message/rfc822",
                language="",
            )
        )
    return blocks


# --- 5. records --------------------------------------------------------------------------


def find_references(*texts: str) -> list[tuple[str, int]]:
    """``#CA<n>``/``#CO<n>`` references in order of appearance, once each: (prefix, n)."""
    refs: list[tuple[str, int]] = []
    for text in texts:
        for m in _REFERENCE.finditer(text or ""):
            ref = (m.group(1).upper(), int(m.group(2)))
            if ref not in refs:
                refs.append(ref)
    return refs


def _lookup_ids(values: Iterable[str]) -> list[str]:
    """Message-IDs to look filed notes up by, each in two spellings, once each.

    First the `message_key` form (``<id>`` lowercased), which matches a note's
    `message_key` whatever case or brackets a client used; then the id as the parser gave
    it (no brackets), which matches a stored raw Message-ID. The store may match either.
    """
    keys: dict[str, None] = {}  # ordered sets: linear in the number of ids
    raw: dict[str, None] = {}
    for value in values:
        mid = normalize_message_id(value)
        if mid is None:
            continue
        keys[mid] = None
        raw[value.strip().strip("<>").strip()] = None
    return [*keys, *(r for r in raw if r not in keys)]


def _thread_ids(parsed: ParsedMessage) -> list[str]:
    return _lookup_ids([*parsed.in_reply_to, *parsed.references])


def _records(
    parsed: ParsedMessage,
    kind: DropboxKind,
    account: AccountView,
    thread_ids: list[str],
    original: _Original,
    notices: list[str],
    already_filed: str | None,
) -> list[RecordAction]:
    texts = [parsed.subject, parsed.text]
    for inner in parsed.attached:
        texts += [inner.subject, inner.text]
    records: list[RecordAction] = []
    linked: set[tuple[str, int]] = set()
    unknown: list[str] = []
    for prefix, number in find_references(*texts):
        record_kind = _RECORD_KIND_OF_PREFIX[prefix]
        ref = f"{prefix}{number}"
        found = account.find_record(record_kind, number)
        if found is not None and found.account_id != account.account_id:
            found = None  # never ours to link, nor to say that it exists elsewhere (§1.1)
        if found is None:
            unknown.append(ref)
            if _RECORD_KIND_OF_DROPBOX.get(kind) != record_kind:
                notices.append(
                    f"reference #{ref} matches no {record_kind} of this account: ignored"
                )
            continue
        if (found.kind, found.id) in linked:
            continue
        linked.add((found.kind, found.id))
        records.append(
            RecordAction(
                found.kind, "link", record_id=found.id, ref=found.ref, why=f"reference #{ref}"
            )
        )
    # A duplicate delivery (say to a colleague's -case@) must not make a second case
    # when the first delivery made one: records the note is filed to count as valid.
    sources: list[tuple[list[str], str]] = []
    if already_filed:
        own_ids = _lookup_ids([parsed.message_id]) if parsed.message_id else []
        own_ids = [i for i in own_ids if i != already_filed]
        sources.append(([already_filed, *own_ids], "already filed"))
    if thread_ids:
        sources.append((thread_ids, "thread"))
    for ids, why in sources:
        for found in account.thread_records(ids):
            if found.account_id != account.account_id or (found.kind, found.id) in linked:
                continue
            linked.add((found.kind, found.id))
            records.append(
                RecordAction(found.kind, "link", record_id=found.id, ref=found.ref, why=why)
            )
    wanted = _RECORD_KIND_OF_DROPBOX.get(kind)
    if wanted is not None and not any(r.kind == wanted for r in records):
        prefix = "CA" if wanted == "case" else "CO"
        missing = [r for r in unknown if r.startswith(prefix)]
        why = f"new from -{kind.value}@ dropbox"
        if missing:
            refs = ", ".join(f"#{r}" for r in missing)
            why += f" (unknown reference {refs})"
            notices.append(
                f"reference {refs} matches no {wanted} of this account: created a new {wanted}"
            )
        # Titled from the subject the user sent (SPEC §5.1): their edit of "Fwd: …" wins;
        # a bare "Fwd:" leaves the forwarded message's subject.
        title = title_from_subject(strip_prefixes(parsed.subject) or original.subject)
        records.append(RecordAction(wanted, "create", title=title, why=why))
    return records


# --- 6. tasks ----------------------------------------------------------------------------


_DUE_KIND = {DropboxKind.TASK: "none", DropboxKind.TODAY: "today", DropboxKind.TOMORROW: "tomorrow"}


def task_due(kind: DropboxKind, timezone: str, now: datetime) -> date | None:
    """The due date of a task from `kind`'s dropbox: the user's local today or tomorrow.

    `now` must be aware; the calendar date is taken in `timezone`, so 23:30 in Los Angeles
    is still "today" there though UTC has moved on, and DST days need no special case.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    if kind is DropboxKind.TODAY:
        offset = 0
    elif kind is DropboxKind.TOMORROW:
        offset = 1
    else:
        return None
    local_today = now.astimezone(ZoneInfo(timezone)).date()
    return local_today + timedelta(days=offset)


def _zone_name(timezone: str, notices: list[str]) -> str:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        notices.append(f"unknown time zone {timezone!r}: due date computed in UTC")
        return "UTC"
    return timezone


def _task(
    kind: DropboxKind, owner: UserInfo, note: NoteDraft, now: datetime, notices: list[str]
) -> TaskAction:
    zone = _zone_name(owner.timezone, notices)
    description = "\n\n".join(part for part in (note.own_text, note.body) if part)
    return TaskAction(
        title=title_from_subject(note.subject),
        description=description,
        due=task_due(kind, zone, now),
        due_kind=_DUE_KIND[kind],
        timezone=zone,
    )


# --- 7. outcome --------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _discard_summary(decisions: list[AddressDecision]) -> str:
    if not decisions:
        return "the message has no address"
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d.rule] = counts.get(d.rule, 0) + 1
    by_rule = ", ".join(f"{n} {rule}" for rule, n in counts.items())
    return f"every address was discarded ({by_rule})"


def _filed_summary(
    contacts: list[ContactAction], records: list[RecordAction], task: TaskAction | None
) -> str:
    created = sum(1 for c in contacts if c.action == "create_contact")
    parts = [f"filed under {_plural(len(contacts), 'contact')} ({created} created)"]
    for r in records:
        label = "case" if r.kind == "case" else "opportunity"
        if r.action == "create":
            parts.append(f"new {label} {r.title!r}")
        else:
            parts.append(f"{label} {r.ref} linked ({r.why})")
    if task is not None:
        parts.append(f"task due {task.due.isoformat()}" if task.due else "task with no due date")
    return "; ".join(parts)


@functools.lru_cache(maxsize=256)
def _normalized(addresses: frozenset[str]) -> frozenset[str]:
    """The addresses normalized, once per set: a batch's messages share their owner's and
    their account's colleagues' (a frozenset keeps its hash; an account of a thousand
    users normalized them for every message)."""
    return frozenset(normalize_address(a) for a in addresses)


def decide(
    parsed: ParsedMessage,
    kind: DropboxKind,
    owner: UserInfo,
    account: AccountView,
    *,
    dropbox_domain: str,
    now: datetime,
    envelope_from: str | None = None,
    received: datetime | None = None,
    rules: Iterable[Rule] = RULES,
) -> FilingPlan:
    """The FilingPlan for one delivery of `parsed` to `owner`'s `kind` dropbox.

    `now` is an aware datetime (task due dates); `received` is when the delivery was
    accepted (the note's date when the message gives none; `now` when not known, as for
    `explain`). `envelope_from` is the SMTP sender when
    known ("" or "<>" for the null sender); it only feeds the auto-generated check that
    suppresses error replies (SPEC §3.4, §6.4). Who may send is checked before this
    (`senders.check_sender`); decide does not reject.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    now = now.astimezone(UTC)
    owner = dataclasses.replace(
        owner, addresses=_normalized(owner.addresses), verified=_normalized(owner.verified)
    )
    notices: list[str] = []

    key = message_key(parsed)
    existing = account.filed_note(key)
    auto = auto_generated_reason(parsed.headers, envelope_from)

    ctx = RuleContext(
        owner=owner,
        account=account,
        dropbox_domain=dropbox_domain,
        colleagues=_normalized(account.colleague_addresses()),
        automated_authors=_bulk_authors(parsed),
    )
    decisions = _decide_addresses(_merge_addresses(parsed), ctx, rules)
    thread_ids = _thread_ids(parsed)
    thread_contacts = account.thread_contacts(thread_ids) if thread_ids else []
    contacts = _contact_actions(decisions, thread_contacts, account)

    original = _original(parsed)
    note = _note(parsed, original, owner, received or now)
    # Records only matter when something is filed: with no contact nothing is (SPEC §4.5).
    records = (
        _records(
            parsed,
            kind,
            account,
            thread_ids,
            original,
            notices,
            key if existing is not None else None,
        )
        if contacts or existing is not None
        else []
    )
    task = _task(kind, owner, note, now, notices) if kind in TASK_KINDS else None

    plan = FilingPlan(
        outcome=Outcome.FILED,
        dropbox=kind,
        message_key=key,
        addresses=decisions,
        contacts=contacts,
        note=note,
        records=records,
        task=task,
        notices=notices,
        forwarded=_forwarded_entries(parsed, original),
        auto_generated=auto,
    )
    return _conclude(plan, parsed, owner, existing)


def _conclude(
    plan: FilingPlan, parsed: ParsedMessage, owner: UserInfo, existing: int | None
) -> FilingPlan:
    """The outcome and its one-line reason: filed, a duplicate, a task only, or nothing to
    file under (then no note and no records, and maybe an error reply)."""
    if existing is not None:
        return dataclasses.replace(
            plan,
            outcome=Outcome.DUPLICATE,
            note_id=existing,
            reason=f"already filed as note {existing}; "
            f"{_plural(len(plan.contacts), 'contact')} and "
            f"{_plural(len(plan.records), 'record')} to link if new",
        )
    if plan.contacts:
        return dataclasses.replace(
            plan, reason=_filed_summary(plan.contacts, plan.records, plan.task)
        )
    discarded = _discard_summary(plan.addresses)
    if plan.task is not None:
        reason = f"task created with no contact: {discarded}"
        if plan.task.due:
            reason += f"; due {plan.task.due.isoformat()}"
        return dataclasses.replace(
            plan, outcome=Outcome.TASK_ONLY, note=None, records=[], reason=reason
        )
    reason = f"no contact found: {discarded}"
    reply_to = None
    if plan.auto_generated is None:
        reply_to = _reply_address(parsed, owner)
    else:
        reason += f"; no reply (auto-generated: {plan.auto_generated})"
    return dataclasses.replace(
        plan, outcome=Outcome.NO_CONTACT, note=None, records=[], reason=reason, reply_to=reply_to
    )


def _reply_address(parsed: ParsedMessage, owner: UserInfo) -> str:
    """Error replies go only to the owner's own verified or signup address (SPEC §6.4)."""
    for mailbox in parsed.from_:
        if mailbox.address and normalize_address(mailbox.address) in owner.verified:
            return normalize_address(mailbox.address)
    return owner.signup_email
