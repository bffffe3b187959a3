"""LMTP replies leave in as few writes as the protocol allows (`_GroupedReplies`)."""

from __future__ import annotations

import asyncio
from typing import Any

from crmdrop.receive.smtp import _GroupedReplies


class Writer:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


class Pushing:
    """Stands in for aiosmtpd's `SMTP.push`: one write per call."""

    _writer: Writer

    async def push(self, status: Any) -> None:
        self._writer.write(status + b"\r\n")


class Server(_GroupedReplies, Pushing):
    enable_SMTPUTF8 = True

    def __init__(self, unread: bytes = b"") -> None:
        self._writer = Writer()
        self._reader = asyncio.StreamReader()
        self._reader.feed_data(unread)


def pushed(unread: bytes, *replies: str) -> list[bytes]:
    async def run() -> list[bytes]:
        server = Server(unread)
        for reply in replies:
            await server.push(reply)
        return server._writer.writes

    return asyncio.run(run())


def test_the_lines_of_a_multi_line_reply_leave_together() -> None:
    lines = ("250-crmdrop", "250-PIPELINING", "250 HELP")
    assert pushed(b"", *lines) == [b"250-crmdrop\r\n250-PIPELINING\r\n250 HELP\r\n"]


def test_a_push_of_whole_lines_leaves_at_once() -> None:
    # LMTP's end of DATA: one push, one line per recipient, the last without a dash
    assert pushed(b"", "250-2.0.0 a\r\n250 2.0.0 b") == [b"250-2.0.0 a\r\n250 2.0.0 b\r\n"]


def test_a_reply_waits_while_the_next_command_is_unread() -> None:
    assert pushed(b"RCPT TO:<a@b.example>\r\n", "250 2.1.0 OK") == []


def test_the_held_replies_leave_with_the_next_one_in_order() -> None:
    async def run() -> list[bytes]:
        server = Server(b"RCPT TO:<a@b.example>\r\nDATA\r\n")
        await server.push("250 2.1.0 OK")  # MAIL: RCPT and DATA unread
        await server._reader.readline()
        await server.push("250 2.1.5 OK")  # RCPT: DATA unread
        await server._reader.readline()
        await server.push("354 End data")  # DATA: nothing unread, the client waits
        return server._writer.writes

    assert asyncio.run(run()) == [b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 End data\r\n"]


def test_part_of_a_line_does_not_hold_the_reply() -> None:
    # a client may be slow to finish its next line, but it waits for this reply meanwhile
    assert pushed(b"RCPT TO:<a@b", "250 2.1.0 OK") == [b"250 2.1.0 OK\r\n"]
