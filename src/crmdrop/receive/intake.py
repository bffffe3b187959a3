"""One whole message from a source that is not an SMTP dialogue (a provider's
webhook, an IMAP mailbox): the same recipient check, sender check and commit as
SMTP, with the per-recipient replies folded into one outcome the shell acts on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from crmdrop.dropbox.address import redact
from crmdrop.receive.service import DUPLICATE, TEMPFAIL, TOO_BIG, TOO_MANY, Rcpt, Receiver

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What the source is told: keep it (2xx / move to handled), refuse it, or retry."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # already queued before (a replayed key): nothing new stored
    REFUSED = "refused"  # unknown dropbox, sender not allowed, too big: never retry
    TEMPORARY = "temporary"  # our fault: retry later


@dataclass(frozen=True)
class Intake:
    """The outcome, the reply per recipient, and the deliveries queued."""

    outcome: Outcome
    replies: dict[str, str]
    delivery_ids: list[int]

    @property
    def detail(self) -> str:
        """The replies in one line, with dropbox tokens hidden (it is logged and returned)."""
        return "; ".join(f"{redact(a)}: {r}" for a, r in self.replies.items())


def _outcome(replies: list[str]) -> Outcome:
    if replies and all(r == DUPLICATE for r in replies):
        return Outcome.DUPLICATE
    if any(r.startswith("2") for r in replies):
        return Outcome.ACCEPTED
    if any(r.startswith("4") for r in replies):
        return Outcome.TEMPORARY
    return Outcome.REFUSED


def _check_recipients(
    receiver: Receiver, addresses: list[str], replies: dict[str, str]
) -> list[Rcpt]:
    accepted: list[Rcpt] = []
    for address in addresses:
        if len(accepted) >= receiver.settings.max_recipients:
            replies[address] = TOO_MANY
            continue
        try:
            reply, rcpt = receiver.check_recipient(address)
        except Exception:
            log.exception("could not look up a recipient")
            reply, rcpt = TEMPFAIL, None
        replies[address] = reply
        if rcpt is not None:
            accepted.append(rcpt)
    return accepted


def take(
    receiver: Receiver,
    *,
    mail_from: str,
    rcpts: list[str],
    raw: bytes,
    protocol: str,
    peer: str,
    key: tuple[str, str] | None = None,
) -> Intake:
    """Check and queue one message for its envelope recipients; returns after the commit."""
    addresses = list(dict.fromkeys(a.strip() for a in rcpts if a.strip()))
    if len(raw) > receiver.settings.max_message_size:
        return Intake(Outcome.REFUSED, dict.fromkeys(addresses or ["-"], TOO_BIG), [])
    replies: dict[str, str] = {}
    accepted = _check_recipients(receiver, addresses, replies)
    if not accepted:
        return Intake(_outcome(list(replies.values())), replies, [])
    verdict = receiver.accept(
        mail_from=mail_from, rcpts=accepted, raw=raw, protocol=protocol, peer=peer, key=key
    )
    for rcpt, reply in zip(accepted, verdict.replies, strict=True):
        replies[rcpt.address] = reply
    result = Intake(_outcome(verdict.replies), replies, verdict.delivery_ids)
    log.info("%s intake from %s: %s (%s)", protocol, mail_from, result.outcome, result.detail)
    return result
