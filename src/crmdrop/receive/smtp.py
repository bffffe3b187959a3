"""The SMTP server (aiosmtpd), and `start_servers` for both mail ports.

The public SMTP port runs on aiosmtpd, with its port guard and STARTTLS; the LMTP port,
which serves only the local MTA, runs our own protocol (`receive/lmtp.py`: aiosmtpd's
per-command machinery cost the MTA's hop several times its work). Both hand the
envelope to the same `Acceptor`. The handler only translates; exceptions answer `451`
(aiosmtpd's default would be a permanent `500`), and aiosmtpd's size replies are given
their enhanced status code `552 5.3.4` (SPEC §7.1).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
import weakref
from collections.abc import Callable
from typing import Any

import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP, Envelope, Session

from crmdrop.config import Settings
from crmdrop.receive.batch import GroupCommitter
from crmdrop.receive.data import BufferedData
from crmdrop.receive.envelope import LINE_LIMIT, Acceptor, Transaction, parsed_address, too_big
from crmdrop.receive.limits import GUESSING, PortGuard, SlotCounts
from crmdrop.receive.lmtp import LMTPServer
from crmdrop.receive.service import TEMPFAIL, UNKNOWN, Receiver, Verdict
from crmdrop.spool import Spool

log = logging.getLogger(__name__)


class _EnhancedReplies:
    """Mixin: give aiosmtpd's own size refusals the enhanced code of SPEC §7.1."""

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and status.startswith("552 Error"):
            # "Too much mail data" ends DATA, the other 552 refuses MAIL FROM with a
            # SIZE= over the limit: in SMTP one reply either way.
            status = too_big(1)
        await super().push(status)  # type: ignore[misc]


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_sanitized_log = aiosmtpd.smtp.sanitized_log


def _sanitized_log_if_enabled(func: Callable[..., None], msg: Any, *args: Any, **kw: Any) -> None:
    """aiosmtpd's `sanitized_log`, skipped for a level that is not logged.

    aiosmtpd logs every command line twice (debug and info) through `sanitized_log`,
    which first runs its AUTH-hiding regex over the line and builds a list, whether or
    not the level is enabled: ≈ 5 % of the event loop's time per message. Installed
    in aiosmtpd's module (its `_handle_client` calls the module's global)."""
    logger = getattr(func, "__self__", None)
    level = _LEVELS.get(getattr(func, "__name__", ""))
    if isinstance(logger, logging.Logger) and level is not None and not logger.isEnabledFor(level):
        return
    _sanitized_log(func, msg, *args, **kw)


aiosmtpd.smtp.sanitized_log = _sanitized_log_if_enabled


class _RememberedAddresses:
    """Mixin: MAIL FROM and RCPT TO parsed once per distinct argument."""

    local_part_limit: int

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        return parsed_address(arg, self.local_part_limit)


class _LazyIdleTimer:
    """Mixin: the idle timeout moved forward without a new timer per command.

    aiosmtpd cancels its timer and schedules another at every command (a `TimerHandle`
    made, pushed on the loop's heap, later swept out cancelled: ≈ 4 % of the LMTP
    process's Python time behind Postfix). Here a command only moves the deadline; the one timer
    that is due looks at the deadline when it fires and, if a command came meanwhile,
    waits for the rest. A session is closed after the same idle time as before."""

    loop: asyncio.AbstractEventLoop
    _timeout_duration: float
    _timeout_handle: asyncio.TimerHandle | None
    _deadline = 0.0

    def _reset_timeout(self, duration: float | None = None) -> None:
        self._deadline = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > self._deadline:
            if handle is not None:  # due later than the new deadline (a shorter wait)
                handle.cancel()
            self._timeout_handle = self.loop.call_at(self._deadline, self._idle_check)

    def _idle_check(self) -> None:
        if self.loop.time() < self._deadline:  # a command since: wait for the rest
            self._timeout_handle = self.loop.call_at(self._deadline, self._idle_check)
            return
        self._timeout_cb()  # type: ignore[attr-defined]


TOO_MANY_COMMANDS = "421 4.7.0 Too many commands in one session, please reconnect"


class DropboxSMTP(_EnhancedReplies, _RememberedAddresses, _LazyIdleTimer, BufferedData):
    """The public port: sessions counted and limited by the shared `PortGuard`, and the
    commands of one session limited in all (`max_commands`) as well as per verb
    (aiosmtpd's `command_call_limit`)."""

    line_length_limit = LINE_LIMIT
    guard: PortGuard | None = None

    _commands_left = 0

    def limit_commands(self, total: int) -> None:
        """At most `total` commands in this session (one protocol object per session).

        aiosmtpd dispatches every recognised verb through `_smtp_methods`: counting there
        covers them all. (Unknown verbs: aiosmtpd closes after 5; blank or overlong lines
        do not reset the idle timer, so the idle timeout ends such a session.)"""
        self._commands_left = total
        methods = self._smtp_methods
        self._smtp_methods = {name: self._counted(m) for name, m in methods.items()}

    def _counted(self, method: Any) -> Any:
        @functools.wraps(method)  # keeps the syntax HELP shows
        async def counted(arg: str | None) -> None:
            self._commands_left -= 1
            if self._commands_left < 0:
                log.warning("SMTP session from %s: too many commands", _peer_ip(self.session))
                await self.push(TOO_MANY_COMMANDS)
                _close(self)
                return
            await method(arg)

        return counted

    async def _handle_client(self) -> None:
        guard, ip = self.guard, _peer_ip(self.session)
        refusal = guard.enter(ip, time.monotonic()) if guard is not None else None
        if refusal is not None:
            log.warning("SMTP session from %s refused: %s", ip, refusal)
            await self.push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        acceptor = self.event_handler.acceptor
        acceptor.session_began()  # here: connection_made runs again after STARTTLS
        try:
            await super()._handle_client()
        finally:
            acceptor.session_ended()
            if guard is not None:
                guard.leave(ip)


def _peer_ip(session: Session | None) -> str:
    peer = session.peer if session is not None else None
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


def _close(server: SMTP) -> None:
    if server.transport is not None:
        server.transport.close()


class DropboxHandler:
    """aiosmtpd handler of the SMTP port; one per listening server. What it does with
    the envelope is the `Acceptor`'s, the LMTP port's too; the port guard is its own."""

    def __init__(self, acceptor: Acceptor, *, guard: PortGuard | None = None) -> None:
        self.guard = guard
        self.acceptor = acceptor
        # Per transaction; weak, so a session that ends without DATA or RSET leaves nothing.
        self._txns: weakref.WeakKeyDictionary[Envelope, Transaction] = weakref.WeakKeyDictionary()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refusal = self.acceptor.sender_refusal(address)
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self._txns[envelope] = Transaction(address)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        txn = self._txns.setdefault(envelope, Transaction(envelope.mail_from or ""))
        ip = _peer_ip(session)
        if self.guard is not None:
            penalty = self.guard.before_rcpt(ip, time.monotonic())
            if penalty.refuse:
                log.warning("RCPT from %s refused: too many unknown recipients", ip)
                asyncio.get_running_loop().call_later(0.2, _close, server)
                return GUESSING
            if penalty.delay:
                await asyncio.sleep(penalty.delay)  # the tarpit: guessing gets slow
        answer = self.acceptor.cached(address)  # no thread hop when remembered
        if answer is None:
            answer = await self.acceptor.look_up(address, mail_from=txn.mail_from, peer=ip)
        reply, joined = self.acceptor.admit(txn, answer)
        if joined:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        elif self.guard is not None and reply == UNKNOWN:
            self.guard.unknown_rcpt(ip, time.monotonic())
        return reply

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves it to this hook
        return responses

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._txns.pop(envelope, None)
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        txn = self._txns.pop(envelope, None)
        if txn is None or not txn.rcpts:
            return "503 5.5.1 No valid recipients"
        raw = server.spool if isinstance(server, BufferedData) else None
        if raw is None:  # pragma: no cover - every server here reads DATA into a Spool
            content = envelope.original_content or b""
            raw = Spool.of(content.encode() if isinstance(content, str) else content)
        replies = await self.acceptor.deliver(
            txn, raw, peer=_peer_ip(session), helo=session.host_name
        )
        return Verdict(replies, []).smtp_reply()

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd would answer a permanent 500: our fault is temporary."""
        log.exception("%s session failed", self.acceptor.protocol, exc_info=error)
        return TEMPFAIL


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """STARTTLS for SMTP once a certificate and key are configured (off until then)."""
    if settings.tls_cert is None or settings.tls_key is None:
        if settings.tls_cert is not None or settings.tls_key is not None:
            raise ValueError("STARTTLS needs both CRMDROP_TLS_CERT and CRMDROP_TLS_KEY")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


async def start_servers(
    receiver: Receiver,
    settings: Settings,
    *,
    smtp: tuple[str, int] | None,
    lmtp: tuple[str, int] | None,
    reuse_port: bool = False,
    counts: SlotCounts | None = None,
) -> list[asyncio.AbstractServer]:
    """Listen for SMTP and/or LMTP on the running loop; return the servers to close.

    `reuse_port`: several processes listen on the same ports (SO_REUSEPORT) and the
    kernel spreads the connections among them (`serve --acceptors N`); they then share
    `counts`, so that their port limits hold for all of them together.
    """
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    committer = GroupCommitter(receiver)
    factories: list[tuple[str, tuple[str, int], Callable[[], asyncio.BaseProtocol]]] = []
    if smtp is not None:
        acceptor = Acceptor(
            receiver, committer, protocol="smtp", max_recipients=settings.max_recipients
        )
        guard = PortGuard.from_settings(settings, counts)  # SMTP only: LMTP's is our own MTA
        factories.append(("smtp", smtp, _smtp_factory(acceptor, settings, guard)))
    if lmtp is not None:
        acceptor = Acceptor(
            receiver, committer, protocol="lmtp", max_recipients=settings.max_recipients
        )
        factories.append(("lmtp", lmtp, LMTPServer.factory(acceptor, settings)))
    for proto, where, factory in factories:
        server = await loop.create_server(
            factory, host=where[0], port=where[1], reuse_port=reuse_port or None
        )
        servers.append(server)
        log.info("%s listening on %s:%s", proto.upper(), *where)
    return servers


def _smtp_factory(
    acceptor: Acceptor, settings: Settings, guard: PortGuard
) -> Callable[[], DropboxSMTP]:
    handler = DropboxHandler(acceptor, guard=guard)
    tls = tls_context(settings)

    def factory() -> DropboxSMTP:
        server = DropboxSMTP(
            handler,
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.smtp_hostname,
            ident="crmdrop ESMTP",
            timeout=settings.smtp_idle_timeout,
            command_call_limit=settings.smtp_max_same_command,
            tls_context=tls,
        )
        server.spool_threshold = settings.smtp_spool_bytes
        server.guard = guard
        server.limit_commands(settings.smtp_max_commands)
        return server

    return factory
