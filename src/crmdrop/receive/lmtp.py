"""The LMTP port's own server (RFC 2033): one `asyncio.Protocol` per connection.

The port serves only the local MTA, which on a cached connection sends, per message,
`RSET`, then `MAIL`, `RCPT` and `DATA` pipelined, then the body. aiosmtpd spent several
times crmdrop's own work on that (a coroutine, a `StreamReader.readuntil`, handler hooks
and a write per command). Here the commands are parsed from the buffer as they arrive,
with bytes operations and a dict of verbs, synchronously where nothing waits: a RCPT
answered from memory needs no await. Only a RCPT the database must answer and the commit
at the end of DATA run as a task; while one is pending, reading pauses and the later
commands wait in the buffer, so that they are answered strictly in order.

What the client sees is what aiosmtpd's LMTP gave it (the same LHLO extensions, the same
address syntax, DATA read by the same `DataBody`: the same end, unstuffing and limits),
with one reply per accepted recipient at the end of DATA (for a refusal of the whole
message too), and the replies to pipelined commands in one write. The checks and the
accept are the SMTP port's: the shared `Acceptor`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from crmdrop.config import Settings
from crmdrop.receive.data import TOO_MUCH, DataBody
from crmdrop.receive.envelope import (
    LINE_LIMIT,
    Acceptor,
    Transaction,
    parsed_address,
    parsed_params,
    per_recipient,
    too_big,
)
from crmdrop.receive.service import TEMPFAIL
from crmdrop.spool import Spool

log = logging.getLogger(__name__)

COMMAND_LIMIT = 512  # RFC 5321 §4.5.3.1.4, as aiosmtpd keeps it
MAIL_LIMIT = COMMAND_LIMIT + 26 + 10  # after LHLO: room for SIZE= and SMTPUTF8 (aiosmtpd's)
BOGUS_LIMIT = 5  # unknown commands before the session is closed (aiosmtpd's)
_END = b"\r\n.\r\n"  # the end of DATA (one CRLF is the last line's)
_END_HEADS = (_END[:4], _END[:3], _END[:2], _END[:1])  # what may be the start of an end

OK = b"250 2.0.0 OK"
NEED_LHLO = b"503 Error: send LHLO first"
TOO_LONG_COMMAND = b"500 Command line too long"
BAD_SYNTAX = b"500 Error: bad syntax"
MALFORMED = b"553 5.1.3 Error: malformed address"
MAIL_SYNTAX = b"501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
RCPT_SYNTAX = b"501 Syntax: RCPT TO: <address> [SP <mail-parameters>]"
TIMEOUT = b"421 4.4.2 Idle for too long, closing the connection"
SYNTAX = {
    "DATA": "DATA",
    "HELP": "HELP [command]",
    "LHLO": "LHLO hostname",
    "MAIL": "MAIL FROM: <address> [SP <mail-parameters>]",
    "NOOP": "NOOP [ignored]",
    "QUIT": "QUIT",
    "RCPT": "RCPT TO: <address> [SP <mail-parameters>]",
    "RSET": "RSET",
    "VRFY": "VRFY <address>",
}
SUPPORTED = " ".join(sorted(SYNTAX))


class Mode(enum.Enum):
    COMMAND = "command"  # parsing command lines
    DATA = "data"  # reading a message body
    BUSY = "busy"  # a RCPT lookup or a commit pending: reading paused
    CLOSED = "closed"


@dataclass(frozen=True)
class PortConfig:
    """What every session of one LMTP port shares."""

    acceptor: Acceptor
    hostname: str
    size_limit: int
    spool_threshold: int
    idle_timeout: float
    line_limit: int = LINE_LIMIT

    @functools.cached_property
    def lhlo_reply(self) -> bytes:
        lines = [self.hostname, f"SIZE {self.size_limit}", "8BITMIME", "SMTPUTF8"]
        lines += ["PIPELINING", "HELP"]  # PIPELINING: Postfix waits once, not three times
        return "\r\n".join(f"250-{x}" for x in lines[:-1]).encode() + b"\r\n250 HELP"


def _encoded(reply: str | bytes) -> bytes:
    # an address echoed back keeps its bytes (surrogate-escaped when they are no UTF-8)
    return reply if isinstance(reply, bytes) else reply.encode("utf-8", "surrogateescape")


def _keyword_arg(keyword: str, arg: str | None) -> str | None:
    """`arg` after `FROM:`/`TO:`, or None when it does not start with it."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    return arg[len(keyword) :].strip()


class LMTPServer(asyncio.Protocol):
    """One LMTP session."""

    @classmethod
    def factory(cls, acceptor: Acceptor, settings: Settings) -> Callable[[], LMTPServer]:
        config = PortConfig(
            acceptor=acceptor,
            hostname=settings.smtp_hostname,
            size_limit=settings.max_message_size,
            spool_threshold=settings.smtp_spool_bytes,
            idle_timeout=settings.smtp_idle_timeout,
        )
        return functools.partial(cls, config)

    def __init__(self, config: PortConfig) -> None:
        self.config = config
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._mode = Mode.COMMAND
        self._buffer = bytearray()
        self._replies: list[bytes] = []
        self._peer = ""
        self._helo: str | None = None
        self._txn: Transaction | None = None
        self._body: DataBody | None = None
        self._body_fresh = False  # nothing of the body read yet: a lone dot ends it
        self._overlong = False  # the rest of a command line past the limit is skipped
        self._bogus = BOGUS_LIMIT
        self._eof = False
        self._write_paused = False
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[str] | None = None
        self._commands: dict[bytes, Callable[[str | None], None]] = {
            b"LHLO": self._lhlo,
            b"MAIL": self._mail,
            b"RCPT": self._rcpt,
            b"DATA": self._data,
            b"RSET": self._rset,
            b"NOOP": self._noop,
            b"QUIT": self._quit,
            b"VRFY": self._vrfy,
            b"HELP": self._help,
            b"HELO": functools.partial(self._not_lmtp, "HELO"),
            b"EHLO": functools.partial(self._not_lmtp, "EHLO"),
        }

    # --- the connection ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self._deadline = self._loop.time() + self.config.idle_timeout
        self._timer = self._loop.call_at(self._deadline, self._idle_check)
        self.config.acceptor.session_began()
        transport.write(f"220 {self.config.hostname} crmdrop LMTP\r\n".encode())

    def data_received(self, data: bytes) -> None:
        if self._mode is Mode.CLOSED:
            return
        self._buffer += data
        self._deadline = self._loop.time() + self.config.idle_timeout
        self._process()

    def eof_received(self) -> bool:
        """Keep the connection for the reply to a command still being answered."""
        self._eof = True
        return self._mode is Mode.BUSY

    def connection_lost(self, exc: Exception | None) -> None:
        self.config.acceptor.session_ended()
        self._mode = Mode.CLOSED
        self._transport = None
        self._buffer.clear()
        if self._timer is not None:
            self._timer.cancel()
        if self._body is not None:  # a message not complete: nothing of it is kept
            self._body.spool.close()
            self._body = None
        # A pending commit goes on (and closes its spool): what it stores, it stores.

    def pause_writing(self) -> None:
        self._write_paused = True
        self._reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._reading()

    def _reading(self) -> None:
        """Read while nothing is pending and the client takes its replies."""
        if self._transport is None:
            return
        if self._mode is Mode.BUSY or self._write_paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def _idle_check(self) -> None:
        """The session's one timer: closes it once idle for the timeout (the deadline
        moves with each read; the timer, only when it fires)."""
        if self._mode is Mode.CLOSED:
            return
        now = self._loop.time()
        if self._mode is Mode.BUSY:  # our own wait is no idleness
            self._deadline = now + self.config.idle_timeout
        if now < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._idle_check)
            return
        log.info("LMTP session from %s: idle timeout", self._peer)
        self._reply(TIMEOUT)
        self._close()

    def _close(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()
        self._mode = Mode.CLOSED

    # --- the buffer ----------------------------------------------------------------

    def _process(self) -> None:
        """Every command (and body) the buffer holds, in order, until one must wait: on
        a read, and once a pending command is answered."""
        try:
            self._parse()
        except Exception:  # a fault of ours outside a command (the spool's disk full)
            log.exception("LMTP session from %s failed", self._peer)
            self._reply(TEMPFAIL)  # nothing of what is unanswered was accepted: retried
            self._close()

    def _parse(self) -> None:
        while True:
            if self._mode is Mode.COMMAND:
                if not self._next_command():
                    break
            elif self._mode is Mode.DATA:
                if not self._take_body():
                    break
            else:
                return  # BUSY (replies held until it is answered) or CLOSED
        self._flush()
        if self._eof:
            self._close()

    def _reply(self, reply: str | bytes) -> None:
        self._replies.append(_encoded(reply))

    def _flush(self) -> None:
        """The replies gathered while parsing: in one write."""
        if self._replies and self._transport is not None:
            self._replies.append(b"")
            self._transport.write(b"\r\n".join(self._replies))
        self._replies.clear()

    def _next_command(self) -> bool:
        """Parse and run the next command line; False when none is complete."""
        buffer = self._buffer
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) > self.config.line_limit:  # never held: skipped to its end
                self._overlong = True
                buffer.clear()
            return False
        line = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        if self._overlong:
            self._overlong = False
            self._reply(TOO_LONG_COMMAND)
            return True
        try:
            self._command(line.rstrip(b"\r\n"))
        except Exception:  # a bug of ours: temporary, and the session goes on
            log.exception("LMTP command from %s failed", self._peer)
            self._reply(TEMPFAIL)
        return True

    def _command(self, line: bytes) -> None:
        verb, _, arg_bytes = line.partition(b" ")
        verb = verb.upper()
        method = self._commands.get(verb)
        if method is None:
            self._unknown(line, verb)
            return
        limit = MAIL_LIMIT if verb == b"MAIL" and self._helo is not None else COMMAND_LIMIT
        if len(line) > limit:
            self._reply(TOO_LONG_COMMAND)
            return
        method(arg_bytes.strip().decode("utf-8", "surrogateescape") if arg_bytes else None)

    def _unknown(self, line: bytes, verb: bytes) -> None:
        if not line or not verb.isascii():
            self._reply(BAD_SYNTAX)
            return
        self._bogus -= 1
        if self._bogus < 1:
            log.warning("LMTP session from %s: too many unknown commands", self._peer)
            self._reply("502 5.5.1 Too many unrecognized commands, goodbye.")
            self._close()
            return
        self._reply(f'500 Error: command "{verb.decode()}" not recognized')

    # --- the commands --------------------------------------------------------------

    def _lhlo(self, arg: str | None) -> None:
        if not arg:
            self._reply("501 Syntax: LHLO hostname")
            return
        self._helo, self._txn = arg, None
        self._reply(self.config.lhlo_reply)

    def _not_lmtp(self, verb: str, arg: str | None) -> None:
        self._reply(f'500 Error: command "{verb}" not recognized')  # LMTP has LHLO only

    def _mail(self, arg: str | None) -> None:
        if self._helo is None:
            self._reply(NEED_LHLO)
            return
        address, params = self._address("FROM:", arg, MAIL_SYNTAX)
        if address is None or params is None:
            return
        if self._txn is not None:
            self._reply(b"503 Error: nested MAIL command")
        else:
            refusal = self._mail_params(params.upper().split())
            refusal = refusal or self.config.acceptor.sender_refusal(address)
            if refusal is not None:
                self._reply(refusal)
                return
            self._txn = Transaction(address)
            self._reply(b"250 2.1.0 OK")

    def _address(
        self, keyword: str, arg: str | None, syntax: bytes
    ) -> tuple[str | None, str | None]:
        """(address, parameters) of a MAIL FROM:/RCPT TO: argument, as aiosmtpd parses
        it; (None, None) once the refusal is given."""
        arg = _keyword_arg(keyword, arg)
        address, params = parsed_address(arg) if arg is not None else (None, None)
        if arg is None or address == "":
            self._reply(syntax)
        elif address is None or params is None:
            self._reply(MALFORMED)
        else:
            return address, params
        return None, None

    def _mail_params(self, options: list[str]) -> str | bytes | None:
        """The refusal of MAIL FROM's parameters (BODY, SMTPUTF8, SIZE), if any."""
        params = parsed_params(options)
        if params is None:
            return MAIL_SYNTAX
        if params.pop("BODY", "7BIT") not in ("7BIT", "8BITMIME"):
            return "501 Error: BODY can only be one of 7BIT, 8BITMIME"
        if not isinstance(params.pop("SMTPUTF8", False), bool):
            return "501 Error: SMTPUTF8 takes no arguments"
        size = params.pop("SIZE", None)
        if size is not None and (isinstance(size, bool) or not size.isdigit()):
            return MAIL_SYNTAX
        if isinstance(size, str) and int(size) > self.config.size_limit:
            return too_big(1)
        if params:
            return "555 MAIL FROM parameters not recognized or not implemented"
        return None

    def _rcpt(self, arg: str | None) -> None:
        if self._helo is None:
            self._reply(NEED_LHLO)
            return
        txn = self._txn
        if txn is None:
            self._reply(b"503 Error: need MAIL command")
            return
        address, params = self._address("TO:", arg, RCPT_SYNTAX)
        if address is None or params is None:
            return
        if (options := parsed_params(params.upper().split())) is None:
            self._reply(RCPT_SYNTAX)
        elif options:
            self._reply("555 RCPT TO parameters not recognized or not implemented")
        else:
            acceptor = self.config.acceptor
            answer = acceptor.cached(address)
            if answer is not None:  # the common case: no await, no task
                self._reply(acceptor.admit(txn, answer)[0])
            else:
                self._wait_for(self._look_up(txn, address))

    async def _look_up(self, txn: Transaction, address: str) -> str:
        acceptor = self.config.acceptor
        answer = await acceptor.look_up(address, mail_from=txn.mail_from, peer=self._peer)
        return acceptor.admit(txn, answer)[0]

    def _data(self, arg: str | None) -> None:
        if self._helo is None:
            self._reply(NEED_LHLO)
        elif self._txn is None or not self._txn.rcpts:
            self._reply(b"503 Error: need RCPT command")
        elif arg:
            self._reply(b"501 Syntax: DATA")
        else:
            self._reply(b"354 End data with <CR><LF>.<CR><LF>")
            spool = Spool(self.config.spool_threshold)
            limit = self.config.size_limit
            self._body = DataBody(spool, size_limit=limit, line_limit=self.config.line_limit)
            self._body_fresh = True
            self._mode = Mode.DATA

    def _rset(self, arg: str | None) -> None:
        if arg:
            self._reply(b"501 Syntax: RSET")
            return
        self._txn = None
        self._reply(OK)

    def _noop(self, arg: str | None) -> None:
        self._reply(b"250 OK")

    def _quit(self, arg: str | None) -> None:
        if arg:
            self._reply(b"501 Syntax: QUIT")
            return
        self._reply(b"221 2.0.0 Bye")
        self._close()

    def _vrfy(self, arg: str | None) -> None:
        if not arg:
            self._reply(b"501 Syntax: VRFY <address>")
        elif parsed_address(arg)[0] is None:
            self._reply("502 Could not VRFY " + arg)
        else:
            self._reply(b"252 Cannot VRFY user, but will accept message and attempt delivery")

    def _help(self, arg: str | None) -> None:
        if not arg:
            self._reply("250 Supported commands: " + SUPPORTED)
        elif arg.upper() in SYNTAX:
            self._reply("250 Syntax: " + SYNTAX[arg.upper()])
        else:
            self._reply("501 Supported commands: " + SUPPORTED)

    # --- DATA ----------------------------------------------------------------------

    def _take_body(self) -> bool:
        """Feed the body in the buffer to `DataBody`; True at its end (then accepted or
        refused), False when more must arrive. A tail that may be the start of the end
        waits in the buffer."""
        body, buffer = self._body, self._buffer
        assert body is not None
        if self._body_fresh:  # the DATA line's CRLF comes before: ".\r\n" ends it here
            if buffer[:3] == _END[2:]:
                del buffer[:3]
                self._end_of_data(body)
                return True
            if len(buffer) < 3 and _END[2:].startswith(buffer):
                return False
            self._body_fresh = False
        end = buffer.find(_END)
        if end >= 0:
            body.add(bytes(buffer[: end + 2]))
            del buffer[: end + len(_END)]
            self._end_of_data(body)
            return True
        keep = next((len(head) for head in _END_HEADS if buffer.endswith(head)), 0)
        body.add(bytes(buffer[: len(buffer) - keep]))
        del buffer[: len(buffer) - keep]
        return False

    def _end_of_data(self, body: DataBody) -> None:
        txn, self._txn, self._body = self._txn, None, None
        assert txn is not None
        self._mode = Mode.COMMAND
        if body.refusal is None:
            self._wait_for(self._deliver(txn, body.spool))
            return
        body.spool.close()
        count = len(txn.rcpts)
        self._reply(
            too_big(count) if body.refusal == TOO_MUCH else per_recipient(body.refusal, count)
        )

    async def _deliver(self, txn: Transaction, spool: Spool) -> str:
        try:
            replies = await self.config.acceptor.deliver(
                txn, spool, peer=self._peer, helo=self._helo
            )
        finally:
            spool.close()
        return "\r\n".join(replies)

    # --- waiting -------------------------------------------------------------------

    def _wait_for(self, work: Coroutine[Any, Any, str]) -> None:
        """Run `work` (its result: the reply); the commands after it wait, unread."""
        self._mode = Mode.BUSY
        self._reading()
        self._task = self._loop.create_task(work)
        self._task.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[str]) -> None:
        self._task = None
        if self._mode is Mode.CLOSED or task.cancelled():  # gone, or the loop shut down
            return
        try:
            reply = task.result()
        except Exception:  # a lookup failed (the database down): temporary
            log.exception("LMTP session from %s: a command failed", self._peer)
            reply = TEMPFAIL
        self._reply(reply)
        self._mode = Mode.COMMAND
        self._deadline = self._loop.time() + self.config.idle_timeout
        self._reading()
        self._process()
