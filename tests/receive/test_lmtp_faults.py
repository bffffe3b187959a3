"""A fault of ours in the LMTP protocol outside a command (the spool cannot be written):
the client hears `451` and the session ends; nothing is accepted, so the MTA retries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crmdrop.receive.envelope import Acceptor, RcptAnswer, Transaction
from crmdrop.receive.lmtp import LMTPServer, PortConfig
from crmdrop.receive.service import OK_RCPT, TEMPFAIL
from crmdrop.spool import Spool


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


class Remembered(Acceptor):
    """Every recipient known; nothing may be delivered in this test."""

    def __init__(self) -> None:
        pass

    def session_began(self) -> None:
        pass  # no group commit to tell

    def session_ended(self) -> None:
        pass

    def cached(self, address: str) -> RcptAnswer | None:
        return OK_RCPT, None

    def admit(self, txn: Transaction, answer: RcptAnswer) -> tuple[str, bool]:
        txn.rcpts.append(answer[1])  # type: ignore[arg-type]
        return answer[0], True

    async def deliver(self, txn: Transaction, raw: Spool, **kw: Any) -> list[str]:
        raise AssertionError("nothing is delivered")


def test_a_spool_that_cannot_be_written_answers_451_and_ends_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def disk_full(self: Spool) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Spool, "_roll_over", disk_full)

    async def run() -> Transport:
        config = PortConfig(Remembered(), "test", 1_000_000, 100, 60.0)
        server = LMTPServer(config)
        transport = Transport()
        server.connection_made(transport)
        server.data_received(b"LHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
        server.data_received(b"DATA\r\n")
        server.data_received(b"Subject: x\r\n\r\n" + b"y" * 500 + b"\r\n")  # past 100 bytes
        return transport

    transport = asyncio.run(run())
    assert transport.written.endswith(TEMPFAIL.encode() + b"\r\n")
    assert b"354" in transport.written and transport.closed
