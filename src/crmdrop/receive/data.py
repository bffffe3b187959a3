"""DATA read into a `Spool`, for bounded memory with large messages.

aiosmtpd keeps DATA as a list of one `bytearray` per line and joins them at the end:
a 25 MB message costs about three times its size (≈ 330,000 small objects, then the
joined copy). Here each line is written, dot-unstuffed, into one `Spool`: in memory
while small, past `spool_threshold` in a temporary file, its SHA-256 computed as it
arrives. The handler finds it as `server.spool` (the envelope's content stays None),
and it is closed (its file deleted) once the handler has answered. The protocol is
aiosmtpd's own (the same replies, size and line-length limits, and handler hook).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, syntax

from crmdrop.spool import Spool

log = logging.getLogger(__name__)

_END = b".\r\n"


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
        buffer = Spool(self.spool_threshold)
        size, limit = 0, self.data_size_limit
        refusal: str | None = None
        partial = False  # inside an over-long line, being skipped
        while self.transport is not None:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.CancelledError:
                log.info("Connection lost during DATA")
                buffer.close()
                self._writer.close()
                raise
            except asyncio.LimitOverrunError as exc:
                refusal = refusal or "500 Line too long (see RFC5321 4.5.3.1.6)"
                buffer.close()
                line = await self._reader.read(exc.consumed)
                partial = True
                continue
            if partial:  # the end of an over-long line
                partial = False
                continue
            if line == _END:
                break
            size += len(line)
            if refusal is None and limit and size > limit:
                refusal = "552 Error: Too much mail data"
            elif refusal is None and len(line) > self.line_length_limit:
                refusal = "500 Line too long (see RFC5321 4.5.3.1.6)"
            if refusal is not None:
                buffer.close()  # keep nothing of a message being refused
                continue
            buffer.write(memoryview(line)[1:] if line.startswith(b".") else line)
        return (buffer, None) if refusal is None else (None, refusal)
