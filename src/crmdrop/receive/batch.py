"""Group commit for the SMTP/LMTP servers.

Messages whose DATA ends while a commit is in flight wait, and are stored
together by the next one: one transaction (one fsync) for many messages, and
still no reply before a message's own commit (SPEC §6.1). With one session,
it is exactly one commit per message; no timer, no added delay.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from crmdrop.receive.service import Prepared, Receiver

log = logging.getLogger(__name__)

MAX_BATCH = 64


class GroupCommitter:
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        # One writer thread: its connection stays warm, and SQLite has one writer anyway.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmdrop-commit")
        self._pending: list[tuple[Prepared, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def store(self, prepared: Prepared) -> Prepared:
        """Return once `prepared` is committed (its replies filled in)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((prepared, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        await future
        return prepared

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            items = [item for item, _ in batch]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._writer, self.receiver.commit, items)
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
