"""The idle timeout of an SMTP/LMTP session (`_LazyIdleTimer`): a command moves the deadline
without a new timer; the session is closed once it has been idle for the whole timeout."""

from __future__ import annotations

import asyncio

from crmdrop.receive.smtp import _LazyIdleTimer


class Session(_LazyIdleTimer):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self._timeout_duration = timeout
        self._timeout_handle = None
        self.closed_at: float | None = None

    def _timeout_cb(self) -> None:  # aiosmtpd's: closes the transport
        self.closed_at = self.loop.time()


def test_commands_keep_a_session_open_and_idleness_closes_it() -> None:
    async def run() -> tuple[float | None, float, float | None]:
        loop = asyncio.get_running_loop()
        session = Session(loop, timeout=1.0)
        session._reset_timeout()  # connection made
        for _ in range(30):  # 1.5 s of commands, each well within the timeout
            await asyncio.sleep(0.05)
            session._reset_timeout()
        open_after_commands, last = session.closed_at, loop.time()
        await asyncio.sleep(2.0)
        return open_after_commands, last, session.closed_at

    open_after_commands, last, closed_at = asyncio.run(run())
    assert open_after_commands is None
    assert closed_at is not None and closed_at >= last + 1.0  # a whole timeout idle


def test_a_shorter_wait_is_not_held_up_by_the_timer_already_due() -> None:
    async def run() -> tuple[float, float | None]:
        loop = asyncio.get_running_loop()
        session = Session(loop, timeout=60.0)
        session._reset_timeout()
        start = loop.time()
        session._reset_timeout(0.2)  # aiosmtpd's PROXY wait is such a shorter one
        await asyncio.sleep(1.0)
        return start, session.closed_at

    start, closed_at = asyncio.run(run())
    assert closed_at is not None and closed_at >= start + 0.2
