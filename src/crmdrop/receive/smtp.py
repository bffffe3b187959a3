"""SMTP and LMTP servers (aiosmtpd): the async edge around `Receiver`.

The handler only translates: RCPT → `check_recipient`, DATA → `accept`, each run
in a thread so the event loop never waits on the database. Exceptions answer
`451` (aiosmtpd's default would be a permanent `500`), and aiosmtpd's size
replies are given their enhanced status code `552 5.3.4` (SPEC §7.1).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from crmdrop.config import Settings
from crmdrop.receive.batch import GroupCommitter
from crmdrop.receive.service import TEMPFAIL, TOO_BIG, Rcpt, Receiver, Verdict

log = logging.getLogger(__name__)

TOO_MANY = "452 4.5.3 Too many recipients"
LINE_LIMIT = 10_000  # RFC 5322 says 998, real mail does not always keep to it


class _EnhancedReplies:
    """Mixin: give aiosmtpd's own size refusals the enhanced code of SPEC §7.1."""

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and status.startswith("552 Error"):
            status = TOO_BIG
        await super().push(status)  # type: ignore[misc]


class DropboxSMTP(_EnhancedReplies, SMTP):
    line_length_limit = LINE_LIMIT


class DropboxLMTP(_EnhancedReplies, LMTP):
    line_length_limit = LINE_LIMIT


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
        self._rcpts: dict[int, list[Rcpt]] = {}

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self._rcpts[id(envelope)] = []
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        accepted = self._rcpts.setdefault(id(envelope), [])
        if len(accepted) >= self.max_recipients:
            return TOO_MANY
        reply, rcpt = await asyncio.to_thread(self.receiver.check_recipient, address)
        if rcpt is not None:
            accepted.append(rcpt)
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return reply

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._rcpts.pop(id(envelope), None)
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpts = self._rcpts.pop(id(envelope), [])
        raw = envelope.original_content or b""
        if isinstance(raw, str):  # pragma: no cover - decode_data is off
            raw = raw.encode("utf-8", "surrogateescape")
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        if not rcpts:
            return "503 5.5.1 No valid recipients"
        if len(raw) > self.receiver.settings.max_message_size:
            return "\r\n".join([TOO_BIG] * len(rcpts)) if self.protocol == "lmtp" else TOO_BIG
        prepared = self.receiver.prepare(
            mail_from=envelope.mail_from or "",
            rcpts=rcpts,
            raw=bytes(raw),
            protocol=self.protocol,
            peer=str(peer),
        )
        await self.committer.store(prepared)
        verdict = Verdict(prepared.replies, prepared.ids)
        if self.protocol == "lmtp":
            return "\r\n".join(verdict.replies)
        return verdict.smtp_reply()

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
