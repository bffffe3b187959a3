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
import ssl
import time
import types
import weakref
from collections.abc import Callable
from typing import Any

import aiosmtpd.smtp
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from crmdrop.config import Settings
from crmdrop.receive.batch import GroupCommitter
from crmdrop.receive.data import BufferedData
from crmdrop.receive.limits import GUESSING, PortGuard, SlotCounts
from crmdrop.receive.service import (
    TEMPFAIL,
    TOO_BIG,
    UNKNOWN,
    Rcpt,
    Receiver,
    Verdict,
    same_dropbox,
)
from crmdrop.spool import Spool
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


@functools.lru_cache(maxsize=2048)
def _parsed_address(arg: str, local_part_limit: int) -> tuple[str | None, str | None]:
    """aiosmtpd's parse of a MAIL/RCPT argument, remembered: a function of the text and
    the limit alone, costly (the `email` header parser, a class defined per call), and
    an MTA names the same few addresses again and again."""
    limits = types.SimpleNamespace(local_part_limit=local_part_limit)
    return SMTP._getaddr(limits, arg)  # type: ignore[arg-type]


class _RememberedAddresses:
    """Mixin: MAIL FROM and RCPT TO parsed once per distinct argument."""

    local_part_limit: int

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        return _parsed_address(arg, self.local_part_limit)


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
        try:
            await super()._handle_client()
        finally:
            if guard is not None:
                guard.leave(ip)


class _GroupedReplies:
    """Mixin: replies leave in as few writes as the protocol allows.

    The lines of a multi-line reply go out together, and so do the replies to pipelined
    commands: while a whole command line already waits unread, its sender is not waiting
    for the reply to the one before (RFC 2920 §3.2 lets the server hold it). Each write
    is a send and a wake-up of the MTA on the same host; behind Postfix (which sends
    RSET before each message on a cached connection) three per message, not five. The
    reply that leaves with nothing unread behind it takes the held ones along, so
    nothing a client waits for stays held.
    """

    enable_SMTPUTF8: bool
    _reader: asyncio.StreamReader
    _held: list[bytes] | None = None

    async def push(self, status: Any) -> None:
        line = (
            status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
            if isinstance(status, str)
            else status
        )
        last = line[line.rfind(b"\n") + 1 :]  # a push may carry several lines (LMTP)
        if last[3:4] == b"-" or self._command_waiting():
            self._held = [*(self._held or []), line]
            return
        if self._held:
            line, self._held = b"\r\n".join([*self._held, line]), None
        await super().push(line)  # type: ignore[misc]

    def _command_waiting(self) -> bool:
        # StreamReader has no peek: its buffer is what has arrived and was not read yet.
        return b"\n" in getattr(self._reader, "_buffer", b"")


class DropboxLMTP(
    _EnhancedReplies, _GroupedReplies, _RememberedAddresses, _LazyIdleTimer, BufferedData, LMTP
):
    line_length_limit = LINE_LIMIT
    per_recipient = True


def _peer_ip(session: Session | None) -> str:
    peer = session.peer if session is not None else None
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


BAD_SENDER = "501 5.1.7 Bad sender address syntax (not UTF-8)"
BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax (not UTF-8)"


def _is_utf8(address: str) -> bool:
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _close(server: SMTP) -> None:
    if server.transport is not None:
        server.transport.close()


def _find_or_add(unique: list[Rcpt], rcpt: Rcpt) -> int:
    for index, other in enumerate(unique):
        if same_dropbox(rcpt, other):
            return index
    unique.append(rcpt)
    return len(unique) - 1


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
        guard: PortGuard | None = None,
    ) -> None:
        self.guard = guard
        self.receiver = receiver
        self.committer = committer
        self.protocol = protocol
        self.max_recipients = max_recipients
        # Per transaction; weak, so a session that ends without DATA or RSET leaves nothing.
        self._rcpts: weakref.WeakKeyDictionary[Envelope, list[Rcpt]] = weakref.WeakKeyDictionary()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not _is_utf8(address):
            # 8-bit bytes that are no UTF-8 (aiosmtpd hands them over surrogate-escaped):
            # refused now, as the syntax error they are, not a 451 at every end of DATA.
            return BAD_SENDER
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        self._rcpts[envelope] = []
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        accepted = self._rcpts.setdefault(envelope, [])
        ip = _peer_ip(session)
        if self.guard is not None:
            penalty = self.guard.before_rcpt(ip, time.monotonic())
            if penalty.refuse:
                log.warning("RCPT from %s refused: too many unknown recipients", ip)
                asyncio.get_running_loop().call_later(0.2, _close, server)
                return GUESSING
            if penalty.delay:
                await asyncio.sleep(penalty.delay)  # the tarpit: guessing gets slow
        if not _is_utf8(address):
            return BAD_RECIPIENT
        answer = self.receiver.cached_recipient(address)  # no thread hop when remembered
        if answer is None:
            answer = await asyncio.to_thread(
                self.receiver.check_recipient,
                address,
                mail_from=envelope.mail_from or "",
                peer=ip,
            )
        reply, rcpt = answer
        if rcpt is None:
            if reply.startswith("550"):
                REFUSALS.add(Refusal.UNKNOWN_DROPBOX)
            if self.guard is not None and reply == UNKNOWN:
                self.guard.unknown_rcpt(ip, time.monotonic())
            return reply
        dropboxes = {(r.owner.user_id, r.kind) for r in accepted}
        if len(dropboxes) >= self.max_recipients and (rcpt.owner.user_id, rcpt.kind) not in (
            dropboxes
        ):
            REFUSALS.add(Refusal.TOO_MANY_RECIPIENTS)
            return TOO_MANY  # a dropbox named again is no further recipient
        accepted.append(rcpt)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return reply

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """LMTP (LHLO) offers PIPELINING: Postfix then sends MAIL, RCPT and DATA at once
        and waits for their replies once, not three times (aiosmtpd reads commands one
        after another either way)."""
        session.host_name = hostname  # aiosmtpd leaves it to this hook
        if self.protocol == "lmtp":
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._rcpts.pop(envelope, None)
        return "250 2.0.0 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        rcpts = self._rcpts.pop(envelope, [])
        if not rcpts:
            return "503 5.5.1 No valid recipients"
        # The same dropbox named twice (case, +tag, or simply again) is one delivery; LMTP
        # still answers once per accepted RCPT, each with its dropbox's reply.
        unique: list[Rcpt] = []
        slot = [_find_or_add(unique, rcpt) for rcpt in rcpts]
        try:
            per_dropbox = await self._accept(server, session, envelope, unique)
            replies = [per_dropbox[i] for i in slot]
        except Exception:  # our fault: temporary, and in LMTP once per recipient
            log.exception("%s: could not take a message", self.protocol)
            replies = [TEMPFAIL] * len(rcpts)
        if self.protocol == "lmtp":
            return "\r\n".join(replies)
        return Verdict(replies, []).smtp_reply()

    async def _accept(
        self, server: SMTP, session: Session, envelope: Envelope, rcpts: list[Rcpt]
    ) -> list[str]:
        raw = server.spool if isinstance(server, BufferedData) else None
        if raw is None:  # pragma: no cover - every server here reads DATA into a Spool
            content = envelope.original_content or b""
            raw = Spool.of(content.encode() if isinstance(content, str) else content)
        if len(raw) > self.receiver.settings.max_message_size:
            return [TOO_BIG] * len(rcpts)
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        check = functools.partial(
            self.receiver.prepare,
            mail_from=envelope.mail_from or "",
            rcpts=rcpts,
            raw=raw,  # the spool DATA was read into: no copy
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
    guard = PortGuard.from_settings(settings, counts)  # SMTP only: LMTP's is our own MTA
    tls = tls_context(settings)
    for proto, where, cls in (("smtp", smtp, DropboxSMTP), ("lmtp", lmtp, DropboxLMTP)):
        if where is None:
            continue
        handler = DropboxHandler(
            receiver,
            committer,
            protocol=proto,
            max_recipients=settings.max_recipients,
            guard=guard if proto == "smtp" else None,
        )

        def factory(cls: type[SMTP] = cls, handler: DropboxHandler = handler) -> SMTP:
            server = cls(
                handler,
                data_size_limit=settings.max_message_size,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=settings.smtp_hostname,
                ident="crmdrop ESMTP",
                timeout=settings.smtp_idle_timeout,
                command_call_limit=settings.smtp_max_same_command if handler.guard else None,
                tls_context=tls if handler.protocol == "smtp" else None,  # LMTP: no TLS
            )
            if isinstance(server, BufferedData):
                server.spool_threshold = settings.smtp_spool_bytes
            if isinstance(server, DropboxSMTP):
                server.guard = handler.guard
                server.limit_commands(settings.smtp_max_commands)
            return server

        server = await loop.create_server(
            factory, host=where[0], port=where[1], reuse_port=reuse_port or None
        )
        servers.append(server)
        log.info("%s listening on %s:%s", proto.upper(), *where)
    return servers
