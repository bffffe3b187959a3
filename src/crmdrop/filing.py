"""The filing step: decide what one delivery files, then apply that decision.

Two names, one per step, used by every door that files or previews:
- `decide_delivery` — the authoritative decision for a message to a dropbox (no writes):
  the sender check, then `dropbox.decide.decide` over the account's `SqlAccountView`.
  `crmdrop explain` prints it; the worker applies it.
- `apply_decision` — carry a `Decision` out inside the caller's transaction and finish the
  delivery: its status, its processing record (the plan JSON), an error reply in the outbox.

- `preview` — `decide_delivery` for a dropbox token, for `explain` (no delivery row).

The worker (`crmdrop.worker`) only claims, retries and parks around these.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from crmdrop.config import Settings
from crmdrop.dropbox.decide import decide, looked_up_addresses, message_key
from crmdrop.dropbox.plan import DropboxKind, FilingPlan, Outcome, UserInfo
from crmdrop.dropbox.sender_auth import recorded_failure
from crmdrop.dropbox.senders import check_message_sender
from crmdrop.mail.model import ParsedMessage
from crmdrop.outbound.replies import build_reply
from crmdrop.store.accounts import (
    AccountSettings,
    StoreError,
    account_settings,
    dropbox_owner,
    owners,
)
from crmdrop.store.apply import BatchWrites, apply_plan
from crmdrop.store.inbound import ClaimedDelivery
from crmdrop.store.outbox import queue_reply
from crmdrop.store.serialize import recorded_plan
from crmdrop.store.status import DeliveryStatus
from crmdrop.store.view import SqlAccountView
from crmdrop.store.webhooks import Event, emit_delivery

log = logging.getLogger(__name__)

NO_CONTACT_REPLY = "no_contact"  # the outbox kind and template of the "not filed" reply


@dataclass
class BatchCache:
    """What the deliveries of one batch can share within one transaction (the read
    snapshot that decides them, or the write transaction that applies them)."""

    views: dict[int, SqlAccountView] = field(default_factory=dict)
    # The batch's dropbox owners and their accounts' settings, one query for all of them
    # (`prefetch_decide`). The transaction that applies a batch is given the accounts its
    # decisions were taken with (`worker._apply_all`) rather than reading them again.
    owners: dict[int, tuple[UserInfo, AccountSettings]] = field(default_factory=dict)
    accounts: dict[int, AccountSettings] = field(default_factory=dict)
    # A batch applied in one transaction: the contacts it looked up by address and the
    # writes left to its end, which the caller writes (`BatchWrites.finish`) before
    # committing. None: each `apply_decision` writes its own before it returns.
    writes: BatchWrites | None = None

    def owner(self, session: Session, user_id: int) -> tuple[UserInfo, AccountSettings]:
        """The dropbox owner as `decide` sees them, and their account's settings."""
        if user_id not in self.owners:
            self.load_owners(session, [user_id])
        return self.owners[user_id]

    def load_owners(self, session: Session, user_ids: Iterable[int]) -> None:
        wanted = sorted(set(user_ids) - self.owners.keys())
        if not wanted:
            return
        found = owners(session, wanted)
        for user_id in wanted:
            assert user_id in found, f"User #{user_id} is gone"
        self.owners.update(found)
        self.accounts.update((account.id, account) for _, account in found.values())

    def account(self, session: Session, account_id: int) -> AccountSettings:
        if account_id not in self.accounts:
            found = account_settings(session, account_id)
            assert found is not None, f"Account #{account_id} is gone"
            self.accounts[account_id] = found
        return self.accounts[account_id]

    def view(self, session: Session, account_id: int) -> SqlAccountView:
        view = self.views.get(account_id)
        if view is None:
            view = self.views[account_id] = SqlAccountView(
                session, self.account(session, account_id)
            )
        return view

    def prefetch_decide(
        self, session: Session, batch: Iterable[tuple[int, int, ParsedMessage]]
    ) -> None:
        """Before deciding a batch of (account id, user id, message): load the owners, and
        what `decide` asks of each account for all of them at once (duplicates,
        addresses, domains)."""
        batch = list(batch)
        self.load_owners(session, [user_id for _, user_id, _ in batch])
        wanted: dict[int, tuple[list[str], list[str]]] = {}
        for account_id, _, parsed in batch:
            if parsed.failure is None:
                keys, addresses = wanted.setdefault(account_id, ([], []))
                keys.append(message_key(parsed))
                addresses.extend(looked_up_addresses(parsed))
        for account_id, (keys, addresses) in wanted.items():
            self.view(session, account_id).prefetch(keys, addresses)

    def prefetch_apply(self, session: Session, batch: Iterable[tuple[int, Decision]]) -> None:
        """Before applying a batch of (account id, decision) in one transaction: the
        late-duplicate checks and the addresses of the contacts to create, at once."""
        wanted: dict[int, tuple[list[str], list[str]]] = {}
        for account_id, decision in batch:
            plan = decision.plan
            if plan is None or plan.outcome is Outcome.NO_CONTACT:
                continue
            keys, addresses = wanted.setdefault(account_id, ([], []))
            if plan.note is not None and plan.note_id is None:
                keys.append(plan.message_key)
            addresses.extend(a.address for a in plan.contacts if a.action == "create_contact")
        new_notes = new_contacts = 0
        for account_id, (keys, addresses) in wanted.items():
            self.view(session, account_id).prefetch(keys, [])
            new_notes += len(keys)
            if self.writes is not None:
                new_contacts += self.writes.look_up(session, account_id, addresses)
        if self.writes is not None:  # at most: a late duplicate creates no note
            self.writes.reserve(session, notes=new_notes, contacts=new_contacts)


@dataclass(frozen=True)
class Decision:
    """A plan and the sender check behind it, as `explain` and the worker see it."""

    plan: FilingPlan | None
    refused: str | None  # the sender check's reason when the author may not use the dropbox


class ParseFailed(RuntimeError):
    """The parser failed on a message (a bug of ours): never judged as the sender's."""


def decide_delivery(
    session: Session,
    parsed: ParsedMessage,
    *,
    user_id: int,
    kind: DropboxKind,
    mail_from: str | None,
    settings: Settings,
    now: datetime,
    received: datetime | None = None,
    cache: BatchCache | None = None,
    sender_auth: str = "",
) -> Decision:
    """The authoritative decision for one message to one dropbox (no writes).

    `sender_auth`: the SPF/DKIM/DMARC verdict recorded when the message was accepted.
    """
    cache = cache or BatchCache()
    owner, account = cache.owner(session, user_id)
    if parsed.failure is not None:
        raise ParseFailed(parsed.failure)  # our fault: retried, then parked — never rejected
    verdict = check_message_sender(parsed, owner, auth_failure=recorded_failure(sender_auth))
    if not verdict.allowed:
        return Decision(None, verdict.detail)
    view = cache.view(session, account.id)
    plan = decide(
        parsed,
        kind,
        owner,
        view,
        dropbox_domain=settings.domain,
        now=now,
        envelope_from=mail_from,
        received=received,
    )
    return Decision(plan, None)


def apply_decision(
    session: Session,
    delivery: ClaimedDelivery,
    parsed: ParsedMessage,
    decision: Decision,
    *,
    settings: Settings,
    now: datetime,
    cache: BatchCache,
) -> None:
    """Carry the decision out and finish the delivery, inside the caller's transaction.

    The delivery's outcome is written with the batch's (`BatchWrites.finish`): one
    UPDATE for all of them; without `cache.writes`, before this returns."""
    writes = cache.writes or BatchWrites()
    if decision.plan is None:
        _finish(delivery, DeliveryStatus.REJECTED, f"rejected by the worker: {decision.refused}")
        emit_delivery(session, delivery, Event.DELIVERY_REJECTED, now=now)
    else:
        account = cache.account(session, delivery.account_id)
        view = cache.view(session, account.id)
        plan = _still_new(decision.plan, view)
        with session.no_autoflush:  # the delivery's note_id waits for the fields below
            done = apply_plan(
                session,
                plan,
                delivery=delivery,
                parsed=parsed,
                account=account,
                now=now,
                writes=writes,
            )
        if plan.note is not None and delivery.note_id is not None:
            view.note_filed(plan.message_key, delivery.note_id)
        reason = "; ".join([plan.reason, *plan.notices])
        if plan.outcome is Outcome.NO_CONTACT:
            reason += _error_reply(session, delivery, parsed, plan, settings, now, cache)
        _finish(delivery, DeliveryStatus.of(plan.outcome), reason)
        # MIME defects the parser recovered from are part of the record (SPEC §6.3). The
        # texts of a note filed now are the note's, not repeated in the record.
        delivery.plan = recorded_plan(
            {**plan.to_json(), "applied": done, "defects": list(parsed.defects)},
            filed_note=plan.note is not None
            and plan.note_id is None
            and delivery.note_id is not None,
        )
    writes.finished.append(delivery)
    if cache.writes is None:
        writes.finish(session, now)
    log.info("delivery #%s: %s (%s)", delivery.id, delivery.status, delivery.reason)


def _finish(delivery: ClaimedDelivery, status: DeliveryStatus, reason: str) -> None:
    """The outcome, written at the batch's end (finished now, claim and error cleared)."""
    delivery.status = status
    delivery.reason = reason


def _still_new(plan: FilingPlan, view: SqlAccountView) -> FilingPlan:
    """A plan decided on an earlier snapshot whose note was filed since (by another worker,
    or a delivery of the same message) is a duplicate now: a new plan that says so.
    `view` belongs to the applying transaction (`BatchCache.prefetch_apply`)."""
    if plan.note is None or plan.note_id is not None:
        return plan
    filed = view.filed_note(plan.message_key)
    if filed is None:
        return plan
    return dataclasses.replace(
        plan,
        # The note exists, and with it whatever case or opportunity its filing created:
        # creating one again would make a second case for the same message.
        records=[r for r in plan.records if r.action != "create"],
        outcome=Outcome.DUPLICATE,
        note_id=filed,
        reason=f"already filed as note #{filed}; only new links added",
    )


def _addresses_text(plan: FilingPlan) -> str:
    lines = [
        f"- {d.address}: {d.rule}{' (' + d.detail + ')' if d.detail else ''}"
        for d in plan.addresses
    ]
    return "\n".join(lines) or "- (no email address at all)"


def _error_reply(
    session: Session,
    delivery: ClaimedDelivery,
    parsed: ParsedMessage,
    plan: FilingPlan,
    settings: Settings,
    now: datetime,
    cache: BatchCache,
) -> str:
    """Queue the "not filed" reply (SPEC §4.5, §6.4); what to add to the delivery's reason."""
    if not plan.reply_to:
        return f"; no reply ({plan.auto_generated or 'no address to reply to'})"
    user = cache.owner(session, delivery.user_id)[0]
    raw = build_reply(
        template=NO_CONTACT_REPLY,
        subject=f"Not filed: {parsed.subject or '(no subject)'}",
        sender=settings.reply_sender,
        to=plan.reply_to,
        in_reply_to=parsed.message_id,
        now=now,
        user_name=user.name,
        original_subject=parsed.subject or "(no subject)",
        reason=plan.reason,
        addresses=_addresses_text(plan),
        rate=settings.reply_rate_per_hour,
    )
    row = queue_reply(
        session,
        account_id=delivery.account_id,
        user_id=user.id,
        delivery_id=delivery.id,
        kind=NO_CONTACT_REPLY,
        mail_to=plan.reply_to,
        raw=raw,
        now=now,
        per_hour=settings.reply_rate_per_hour,
    )
    return f"; error reply {row.status} to {plan.reply_to}"


@dataclass(frozen=True)
class Preview:
    """What a message to a dropbox would do, without doing it (`crmdrop explain`)."""

    owner_email: str
    decision: Decision


def preview(
    session: Session,
    parsed: ParsedMessage,
    *,
    token: str,
    kind: DropboxKind,
    mail_from: str | None,
    settings: Settings,
    now: datetime,
) -> Preview:
    """`decide_delivery` for the owner of a dropbox token; StoreError when there is none.
    Writes nothing: the caller rolls back (reading a view may autoflush nothing)."""
    found = dropbox_owner(session, token)
    if found is None:
        raise StoreError("no such dropbox (unknown or regenerated)")
    owner = found[0]
    decision = decide_delivery(
        session,
        parsed,
        user_id=owner.user_id,
        kind=kind,
        mail_from=mail_from,
        settings=settings,
        now=now,
    )
    return Preview(owner.user_email, decision)
