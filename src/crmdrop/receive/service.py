"""The receive core, plain synchronous functions the protocol shells wrap.

Cheap checks first (is the recipient a live dropbox, may this author send to
it), then the raw bytes and envelope are committed to the inbound queue, and
only then is a 2xx returned. Any fault of ours becomes a 4xx, never a 5xx
(DESIGN step 1). The worker checks the sender again (authoritative).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from crmdrop.config import Settings
from crmdrop.dropbox.address import parse_dropbox_address, redact
from crmdrop.dropbox.plan import DropboxKind
from crmdrop.dropbox.sender_auth import upstream_verdict
from crmdrop.dropbox.senders import check_sender
from crmdrop.mail.headers import HeaderSummary, read_header_summary
from crmdrop.store.accounts import Recipient, find_token_owner, user_info
from crmdrop.store.db import Database
from crmdrop.store.inbound import NewDelivery, add_delivery
from crmdrop.store.models import User

log = logging.getLogger(__name__)

OK_RCPT = "250 2.1.5 OK"
UNKNOWN = "550 5.1.1 No such dropbox here: check the address, or it was regenerated"
TOO_BIG = "552 5.3.4 Message too big for this dropbox"
TEMPFAIL = "451 4.3.0 Temporary failure on our side, please try again later"


@dataclass(frozen=True)
class Rcpt:
    """A recipient that passed the RCPT check."""

    address: str
    token: str
    kind: DropboxKind
    owner: Recipient


@dataclass(frozen=True)
class Verdict:
    """One reply line per recipient, in RCPT order (LMTP needs them all)."""

    replies: list[str]
    delivery_ids: list[int]

    def smtp_reply(self) -> str:
        """The single SMTP reply: 250 when any recipient took it, else the first refusal."""
        accepted = [r for r in self.replies if r.startswith("250")]
        if accepted:
            return accepted[0]
        temporary = [r for r in self.replies if r.startswith("4")]
        return temporary[0] if temporary else self.replies[0]


class Receiver:
    """Checks and enqueues; shared by the SMTP and LMTP servers and `crmdrop ingest`."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def check_recipient(self, address: str) -> tuple[str, Rcpt | None]:
        """RCPT time: is `address` a live dropbox? (SPEC §2.2, §2.3, §7.1)"""
        parsed = parse_dropbox_address(address, self.settings.domain)
        if parsed is None:
            return UNKNOWN, None
        token, kind = parsed
        with self.db.reading() as session:
            owner = find_token_owner(session, token)
        if owner is None:
            log.info("RCPT to unknown or revoked dropbox %s", redact(address))
            return UNKNOWN, None
        return OK_RCPT, Rcpt(address=address, token=token, kind=kind, owner=owner)

    def _sender_refusal(
        self, summary: HeaderSummary, author: str | None, owner_user: User, session: Session
    ) -> str | None:
        """Why this author may not use this dropbox (SPEC §3), or None when they may."""
        info = user_info(session, owner_user)
        recipients = [m.address for m in [*summary.to, *summary.cc] if m.address]
        verdict = check_sender(author, recipients, info)
        if not verdict.allowed:
            return verdict.detail
        if self.settings.sender_auth == "upstream" and self.settings.upstream_authserv:
            auth = upstream_verdict(summary.headers, self.settings.upstream_authserv, author)
            if auth.failed:
                return f"the author's domain failed sender authentication: {auth.detail}"
        return None

    def accept(
        self, *, mail_from: str, rcpts: list[Rcpt], raw: bytes, protocol: str, peer: str
    ) -> Verdict:
        """End of DATA: check the author per recipient, commit, then answer."""
        if len(raw) > self.settings.max_message_size:
            return Verdict([TOO_BIG] * len(rcpts), [])
        try:
            return self._accept(
                mail_from=mail_from, rcpts=rcpts, raw=raw, protocol=protocol, peer=peer
            )
        except Exception:
            log.exception("could not queue a message from %s (peer %s)", mail_from, peer)
            return Verdict([TEMPFAIL] * len(rcpts), [])

    def _accept(
        self, *, mail_from: str, rcpts: list[Rcpt], raw: bytes, protocol: str, peer: str
    ) -> Verdict:
        summary = read_header_summary(raw)
        author = next((m.address for m in summary.from_ if m.address), None)
        now = datetime.now(UTC)
        replies: list[str] = []
        ids: list[int] = []
        with self.db.writing() as session:
            for rcpt in rcpts:
                owner = find_token_owner(session, rcpt.token)
                user = session.get(User, owner.user_id) if owner is not None else None
                if user is None:
                    replies.append(UNKNOWN)  # regenerated between RCPT and DATA
                    continue
                refusal = self._sender_refusal(summary, author, user, session)
                new = NewDelivery(
                    account_id=user.account_id,
                    user_id=user.id,
                    dropbox_kind=rcpt.kind.value,
                    rcpt_to=rcpt.address,
                    mail_from=mail_from,
                    protocol=protocol,
                    peer=peer,
                    message_id=summary.message_id,
                    subject=summary.subject,
                    author=author or "",
                )
                if refusal is None:
                    delivery = add_delivery(session, new, raw, now=now)
                    ids.append(delivery.id)
                    replies.append(f"250 2.0.0 OK: queued as {delivery.id}")
                else:
                    add_delivery(session, new, None, now=now, reason=f"rejected: {refusal}")
                    replies.append(f"550 5.7.1 {_one_line(refusal)}")
        log.info(
            "%s from %s via %s: %s", summary.message_id, mail_from, protocol, "; ".join(replies)
        )
        return Verdict(replies, ids)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]
