"""What both mail ports do with an envelope, whatever server speaks the protocol.

The SMTP port runs on aiosmtpd (`receive/smtp.py`), the LMTP port on our own protocol
(`receive/lmtp.py`); both call this one `Acceptor`, so that they check, refuse, count
and accept alike: the RCPT check (from memory, else the database in a thread) and the
rule on how many dropboxes one message may reach, the same dropbox named twice taken
once, the accept (headers checked inline for a small message, then the group commit),
one reply per accepted recipient, and `451` for any fault of ours.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import types
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP

from crmdrop.receive.batch import GroupCommitter
from crmdrop.receive.service import TEMPFAIL, TOO_BIG, TOO_MANY, Rcpt, Receiver, same_dropbox
from crmdrop.spool import Spool
from crmdrop.telemetry import REFUSALS, Refusal

log = logging.getLogger(__name__)

LINE_LIMIT = 10_000  # RFC 5322 says 998, real mail does not always keep to it
BAD_SENDER = "501 5.1.7 Bad sender address syntax (not UTF-8)"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax (not UTF-8)"
# Above this size the header check at end of DATA runs in a thread: a message can carry
# megabytes of headers, and parsing them on the event loop would stall every session.
# (With sender_auth = dns it always does: it waits on DNS.)
INLINE_CHECK_LIMIT = 256 * 1024

RcptAnswer = tuple[str, Rcpt | None]


@functools.lru_cache(maxsize=2048)
def parsed_address(arg: str, local_part_limit: int = 0) -> tuple[str | None, str | None]:
    """aiosmtpd's parse of a MAIL/RCPT argument, remembered: a function of the text and
    the limit alone, costly (the `email` header parser, a class defined per call), and
    an MTA names the same few addresses again and again."""
    limits = types.SimpleNamespace(local_part_limit=local_part_limit)
    return SMTP._getaddr(limits, arg)  # type: ignore[arg-type]


def parsed_params(options: list[str]) -> dict[str, str | bool] | None:
    """MAIL/RCPT parameters as aiosmtpd reads them (RFC 1869 syntax); None if malformed.
    Its method uses nothing of the server it belongs to."""
    return SMTP._getparams(types.SimpleNamespace(), options)  # type: ignore[arg-type]


def is_utf8(address: str) -> bool:
    """False for 8-bit bytes that are no UTF-8 (handed over surrogate-escaped)."""
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def per_recipient(reply: str, count: int) -> str:
    """The same reply once per recipient (LMTP's end of DATA), at least once."""
    return "\r\n".join([reply] * max(1, count))


def too_big(count: int) -> str:
    """A message (or a MAIL SIZE=) over the limit: `552 5.3.4` (SPEC §7.1), counted."""
    REFUSALS.add(Refusal.TOO_LARGE)
    return per_recipient(TOO_BIG, count)


@dataclass
class Transaction:
    """One MAIL FROM and the recipients accepted for it so far, in RCPT order."""

    mail_from: str
    rcpts: list[Rcpt] = field(default_factory=list)


def _find_or_add(unique: list[Rcpt], rcpt: Rcpt) -> int:
    for index, other in enumerate(unique):
        if same_dropbox(rcpt, other):
            return index
    unique.append(rcpt)
    return len(unique) - 1


class Acceptor:
    """The checks and the accept of one port (`protocol`: "smtp" or "lmtp")."""

    def __init__(
        self,
        receiver: Receiver,
        committer: GroupCommitter,
        *,
        protocol: str,
        max_recipients: int,
    ) -> None:
        self.receiver = receiver
        self.committer = committer
        self.protocol = protocol
        self.max_recipients = max_recipients

    def session_began(self) -> None:
        """A client connected: one more session that may join a group commit."""
        self.committer.session_began()

    def session_ended(self) -> None:
        self.committer.session_ended()

    def sender_refusal(self, address: str) -> str | None:
        """A MAIL FROM refused now, as the syntax error it is, not a 451 at every end of
        DATA (bytes that are no UTF-8); None when it may go on."""
        return None if is_utf8(address) else BAD_SENDER

    def cached(self, address: str) -> RcptAnswer | None:
        """The RCPT answer without I/O (safe on the event loop), or None when the
        database must be asked (`look_up`)."""
        if not is_utf8(address):
            return BAD_RECIPIENT, None
        return self.receiver.cached_recipient(address)

    async def look_up(self, address: str, *, mail_from: str, peer: str) -> RcptAnswer:
        """The RCPT answer from the database, in a thread."""
        return await asyncio.to_thread(
            self.receiver.check_recipient, address, mail_from=mail_from, peer=peer
        )

    def admit(self, txn: Transaction, answer: RcptAnswer) -> tuple[str, bool]:
        """(the RCPT reply, whether the recipient joined `txn`): refusals counted, and at
        most `max_recipients` dropboxes per message (a dropbox named again is none more)."""
        reply, rcpt = answer
        if rcpt is None:
            if reply.startswith("550"):
                REFUSALS.add(Refusal.UNKNOWN_DROPBOX)
            return reply, False
        if not any(same_dropbox(rcpt, other) for other in txn.rcpts):
            dropboxes = {(r.owner.user_id, r.kind) for r in txn.rcpts}
            if len(dropboxes) >= self.max_recipients:
                REFUSALS.add(Refusal.TOO_MANY_RECIPIENTS)
                return TOO_MANY, False
        txn.rcpts.append(rcpt)
        return reply, True

    async def deliver(
        self, txn: Transaction, raw: Spool, *, peer: str, helo: str | None
    ) -> list[str]:
        """End of DATA: one reply per accepted recipient, in RCPT order, once the message
        is committed (`451` for all of them should anything of ours fail).

        The same dropbox named twice (case, +tag, or simply again) is one delivery; each
        of its RCPTs gets its reply."""
        unique: list[Rcpt] = []
        slot = [_find_or_add(unique, rcpt) for rcpt in txn.rcpts]
        try:
            per_dropbox = await self._accept(txn.mail_from, unique, raw, peer=peer, helo=helo)
        except Exception:  # our fault: temporary
            log.exception("%s: could not take a message", self.protocol)
            return [TEMPFAIL] * len(txn.rcpts)
        return [per_dropbox[i] for i in slot]

    async def _accept(
        self, mail_from: str, rcpts: list[Rcpt], raw: Spool, *, peer: str, helo: str | None
    ) -> list[str]:
        if len(raw) > self.receiver.settings.max_message_size:
            return [TOO_BIG] * len(rcpts)
        check = functools.partial(
            self.receiver.prepare,
            mail_from=mail_from,
            rcpts=rcpts,
            raw=raw,  # the spool DATA was read into: no copy
            protocol=self.protocol,
            peer=peer,
            helo=helo,
        )
        inline = len(raw) <= INLINE_CHECK_LIMIT and self.receiver.settings.sender_auth != "dns"
        prepared = check() if inline else await asyncio.to_thread(check)
        await self.committer.store(prepared)
        return prepared.replies
