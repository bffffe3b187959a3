"""DATA read into a `Spool`, in chunks, for bounded memory and little CPU per message.

aiosmtpd reads DATA one line at a time (an `await`, a buffer copy and a list entry per
line: about a third of its CPU for a 5 KB message) and keeps it as one `bytearray` per
line. Here the stream is read in chunks up to the next possible end (`<LF>.<CR><LF>`,
or the reader's limit), dot-unstuffed with one `bytes.replace` per chunk, and written
into one `Spool`: in memory while small, past `spool_threshold` in a temporary file, its
SHA-256 computed as it arrives. The handler finds it as `server.spool` (the envelope's
content stays None), and it is closed (its file deleted) once the handler has answered.

What a client sees is aiosmtpd's own: the same end of DATA (`<CR><LF>.<CR><LF>` only;
a bare LF or CR around the dot is data), the same unstuffing (one dot off a line that
starts with one), the same size and line-length refusals, given once the message has
all arrived, and nothing read past the end of DATA (a pipelined command stays there).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, syntax

from crmdrop.spool import Spool

log = logging.getLogger(__name__)

_CRLF = b"\r\n"
_END = b".\r\n"
# A chunk is read up to this: what ends DATA, or (after a bare LF) a line that looks like it.
_MAYBE_END = b"\n.\r\n"
TOO_MUCH = "552 Error: Too much mail data"
TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"


class DataBody:
    """The raw (dot-stuffed) bytes of DATA as they are read, in pieces of any size:
    counted against the limits line by line as aiosmtpd counts them, unstuffed, spooled.

    A line is what ends in CRLF. Its bytes count towards the size limit, unless the
    line is longer than the reader's limit (aiosmtpd skips such a line's bytes); a line
    longer than `line_limit` (CRLF included) is refused. The first refusal stands and
    nothing more is kept. A CR that ends a piece waits for the next one (the CRLF and
    the dot after it may arrive apart).
    """

    def __init__(self, spool: Spool, *, size_limit: int | None, line_limit: int) -> None:
        self.spool = spool
        self.size_limit = size_limit or 0
        self.line_limit = line_limit
        self.size = 0  # bytes counted so far
        self.line = 0  # bytes of the line not yet ended
        self.refusal: str | None = None
        self.at_line_start = True
        self._cr = b""

    @property
    def ends_in_cr(self) -> bool:
        """Whether the last byte given was a CR (held back until the next piece)."""
        return bool(self._cr)

    def add(self, raw: bytes) -> None:
        data = self._cr + raw if self._cr else raw
        self._cr = b"\r" if data.endswith(b"\r") else b""
        if self._cr:
            data = data[:-1]
        if data:
            if self.refusal is None:
                self._count(data)
            if self.refusal is None:
                if self.at_line_start and data.startswith(b"."):
                    data = data[1:]
                self.spool.write(data.replace(b"\r\n.", _CRLF) if b"\r\n." in data else data)
            self.at_line_start = data.endswith(_CRLF)
        if self._cr:
            self.at_line_start = False

    def _count(self, data: bytes) -> None:
        """Size (of the lines ended) and line length; without a loop over the lines
        unless a limit is near."""
        line_limit, last = self.line_limit, data.rfind(_CRLF)
        longest = self.line + len(data)  # no line here is longer, nor adds more size
        near = self.size_limit and self.size + longest > self.size_limit
        if not near and longest <= line_limit:
            if last < 0:
                self.line += len(data)
            else:
                self.size += self.line + last + 2
                self.line = len(data) - last - 2
            return
        lines = data.split(_CRLF)
        for index, piece in enumerate(lines[:-1]):
            self._one_line(len(piece) + 2 + (self.line if index == 0 else 0))
        self.line = len(lines[-1]) + (self.line if len(lines) == 1 else 0)
        if self.line > line_limit and self.refusal is None:
            self.refusal = TOO_LONG  # an over-long line, still arriving
        if self.refusal is not None:
            self.spool.close()  # keep nothing of a message being refused

    def _one_line(self, length: int) -> None:
        if length - 2 > self.line_limit:  # past the reader's limit: aiosmtpd skips it
            self.refusal = self.refusal or TOO_LONG
            return
        self.size += length
        if self.refusal is None and self.size_limit and self.size > self.size_limit:
            self.refusal = TOO_MUCH
        elif self.refusal is None and length > self.line_limit:
            self.refusal = TOO_LONG


async def read_body(reader: asyncio.StreamReader, body: DataBody) -> None:
    """Read DATA up to and without its end (`<CR><LF>.<CR><LF>`) into `body`.

    At a line start one byte is read first: a dot there may end DATA or be stuffing.
    Elsewhere a chunk is read up to the next `<LF>.<CR><LF>` (the end when a CR comes
    before it) or, failing that, as much as the reader holds without a partial match.
    """
    while True:
        prefix = b""
        if body.at_line_start:
            prefix = await reader.readexactly(1)
            if prefix == b".":
                try:
                    rest = await reader.readuntil(_CRLF)
                except asyncio.LimitOverrunError as exc:
                    body.add(prefix + await reader.read(exc.consumed))
                    continue
                if rest == _CRLF:
                    return  # a lone dot at the start of a line: the end
                body.add(prefix + rest)
                continue
        try:
            chunk = prefix + await reader.readuntil(_MAYBE_END)
        except asyncio.LimitOverrunError as exc:
            body.add(prefix + await reader.read(exc.consumed))
            continue
        head = chunk[:-3]  # without ".\r\n"
        if head.endswith(_CRLF) or (head == b"\n" and body.ends_in_cr):
            body.add(head)
            return
        body.add(chunk)  # a bare LF before the dot: a line like any other


class BufferedData(SMTP):
    """An aiosmtpd server whose DATA is one `Spool` (mix in before `SMTP`/`LMTP`)."""

    spool_threshold = 1024 * 1024  # set from CRMDROP_SMTP_SPOOL_BYTES by the factory
    spool: Spool | None = None  # the message of the DATA being answered

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, refusal = await self._read_data()
        if refusal is not None:
            await self.push(refusal)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        assert content is not None
        self.spool = content
        try:
            status: Any = await self._call_handler_hook("DATA")
        finally:
            self.spool = None
            content.close()
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self) -> tuple[Spool | None, str | None]:
        """The message (dot-unstuffed) or the refusal to give once it has all arrived."""
        spool = Spool(self.spool_threshold)
        body = DataBody(spool, size_limit=self.data_size_limit, line_limit=self.line_length_limit)
        try:
            await read_body(self._reader, body)
        except asyncio.CancelledError:  # the connection is gone (aiosmtpd cancels us)
            log.info("Connection lost during DATA")
            spool.close()
            self._writer.close()
            raise
        except BaseException:
            spool.close()
            raise
        return (spool, None) if body.refusal is None else (None, body.refusal)
