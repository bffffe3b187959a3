"""SMTP and LMTP servers (aiosmtpd): the async edge around `Receiver`.

The handler only translates: RCPT → `check_recipient`, DATA → `accept`, each run
in a thread so the event loop never waits on the database. Exceptions answer
`451` (aiosmtpd's default would be a permanent `500`), and aiosmtpd's size
replies are given their enhanced status code `552 5.3.4` (SPEC §7.1).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from crmdrop.config import Settings
from crmdrop.receive.batch import GroupCommitter
from crmdrop.receive.service import TEMPFAIL, TOO_BIG, Rcpt, Receiver, Verdict
from crmdrop.telemetry import REFUSALS, Refusal

log = logging.getLogger(__name__)

TOO_MANY = "452 4.5.3 Too many recipients"
LINE_LIMIT = 10_000  # RFC 5322 says 998, real mail does not always keep to it


class _EnhancedReplies:
    """Mixin: give aiosmtpd's own size refusals the enhanced code of SPEC §7.1."""

    per_recipient = False  # LMTP answers the end of DATA once per accepted recipient

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and status.startswith("552 Error"):
            # "Too much mail data" ends DATA (LMTP: one reply per recipient); the other
            # 552 refuses MAIL FROM with a SIZE= over the limit (one reply).
            envelope = getattr(self, "envelope", None)
            at_data = "Too much mail data" in status
            count = len(envelope.rcpt_tos) if at_data and envelope is not None else 1
            status = _per_recipient(TOO_BIG, count if self.per_recipient else 1)
            REFUSALS.add(Refusal.TOO_LARGE)
        await super().push(status)  # type: ignore[misc]


class DropboxSMTP(_EnhancedReplies, SMTP):
    line_length_limit = LINE_LIMIT


class DropboxLMTP(_EnhancedReplies, LMTP):
    line_length_limit = LINE_LIMIT
    per_recipient = True


def _per_recipient(reply: str, count: int) -> str:
    return "\r\n".join([reply] * max(1, count))


# Above this size the header check at end of DATA runs in a thread: a message can carry
# megabytes of headers, and parsing them on the event loop would stall every session.
# (With sender_auth = dns it always does: it waits on DNS.)
INLINE_CHECK_LIMIT = 256 * 1024


class DropboxHandler:
    """aiosmtpd handler; one per listening server."""

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
        # Per transaction; weak, so a session that ends without DATA or RSET leaves nothing.
        self._rcpts: weakref.WeakKeyDictionary[Envelope, list[Rcpt]] = weakref.WeakKeyDictionary()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self._rcpts[envelope] = []
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        accepted = self._rcpts.setdefault(envelope, [])
        if len(accepted) >= self.max_recipients:
            REFUSALS.add(Refusal.TOO_MANY_RECIPIENTS)
            return TOO_MANY
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer or "")
        reply, rcpt = await asyncio.to_thread(
            self.receiver.check_recipient,
            address,
            mail_from=envelope.mail_from or "",
            peer=peer,
        )
        if rcpt is None and reply.startswith("550"):
            REFUSALS.add(Refusal.UNKNOWN_DROPBOX)
        if rcpt is not None:
            accepted.append(rcpt)
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return reply

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._rcpts.pop(envelope, None)
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpts = self._rcpts.pop(envelope, [])
        if not rcpts:
            return "503 5.5.1 No valid recipients"
        try:
            replies = await self._accept(session, envelope, rcpts)
        except Exception:  # our fault: temporary, and in LMTP once per recipient
            log.exception("%s: could not take a message", self.protocol)
            replies = [TEMPFAIL] * len(rcpts)
        if self.protocol == "lmtp":
            return "\r\n".join(replies)
        return Verdict(replies, []).smtp_reply()

    async def _accept(self, session: Session, envelope: Envelope, rcpts: list[Rcpt]) -> list[str]:
        raw = envelope.original_content or b""
        if isinstance(raw, str):  # pragma: no cover - decode_data is off
            raw = raw.encode("utf-8", "surrogateescape")
        if len(raw) > self.receiver.settings.max_message_size:
            return [TOO_BIG] * len(rcpts)
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        check = functools.partial(
            self.receiver.prepare,
            mail_from=envelope.mail_from or "",
            rcpts=rcpts,
            raw=bytes(raw),
            protocol=self.protocol,
            peer=str(peer),
            helo=session.host_name,
        )
        inline = len(raw) <= INLINE_CHECK_LIMIT and self.receiver.settings.sender_auth != "dns"
        prepared = check() if inline else await asyncio.to_thread(check)
        await self.committer.store(prepared)
        return prepared.replies

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd would answer a permanent 500: our fault is temporary."""
        log.exception("%s session failed", self.protocol, exc_info=error)
        return TEMPFAIL


async def start_servers(
    receiver: Receiver,
    settings: Settings,
    *,
    smtp: tuple[str, int] | None,
    lmtp: tuple[str, int] | None,
) -> list[asyncio.AbstractServer]:
    """Listen for SMTP and/or LMTP on the running loop; return the servers to close."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    committer = GroupCommitter(receiver)
    for proto, where, cls in (("smtp", smtp, DropboxSMTP), ("lmtp", lmtp, DropboxLMTP)):
        if where is None:
            continue
        handler = DropboxHandler(
            receiver, committer, protocol=proto, max_recipients=settings.max_recipients
        )

        def factory(cls: type[SMTP] = cls, handler: DropboxHandler = handler) -> SMTP:
            return cls(
                handler,
                data_size_limit=settings.max_message_size,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=settings.smtp_hostname,
                ident="crmdrop ESMTP",
            )

        server = await loop.create_server(factory, host=where[0], port=where[1])
        servers.append(server)
        log.info("%s listening on %s:%s", proto.upper(), *where)
    return servers
