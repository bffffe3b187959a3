"""Group commit for the SMTP/LMTP servers.

Messages whose DATA ends while a commit is in flight wait, and are stored
together by the next one: one transaction (one fsync) for many messages, and
still no reply before a message's own commit (SPEC §6.1). With one session,
it is exactly one commit per message; no timer, no added delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable

from crmdrop.receive.service import TEMPFAIL, Prepared, Receiver

log = logging.getLogger(__name__)

MAX_BATCH = 64
# Raw bytes per group commit: 64 messages of 25 MB would be 1.6 GB in one transaction.
MAX_BATCH_BYTES = 32 * 1024 * 1024

_Waiting = tuple[Prepared, "asyncio.Future[None]"]


def take_batch(
    pending: list[_Waiting], *, max_count: int = MAX_BATCH, max_bytes: int = MAX_BATCH_BYTES
) -> tuple[list[_Waiting], list[_Waiting]]:
    """(the next batch, the rest): at most `max_count` messages and, past the first,
    `max_bytes` of raw message."""
    size = 0
    for index, (item, _) in enumerate(pending[:max_count]):
        size += len(item.raw)
        if index and size > max_bytes:
            return pending[:index], pending[index:]
    return pending[:max_count], pending[max_count:]


class _Writer:
    """One thread that commits the batches handed to it, one after the other: its
    connection stays warm, SQLite has one writer anyway, and a hand-over is a queue put
    and one `call_soon_threadsafe` back (no executor, no concurrent future to chain)."""

    def __init__(self, commit: Callable[[list[Prepared]], None]) -> None:
        self._commit = commit
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, items: list[Prepared]) -> asyncio.Future[None]:
        """A future of the loop, done (or failed, as the commit did) once committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="crmdrop-commit", daemon=True)
            self._thread.start()
        self._jobs.put((items, loop, done))
        return done

    def _serve(self) -> None:
        while True:
            items, loop, done = self._jobs.get()
            error: BaseException | None = None
            try:
                self._commit(items)
            except BaseException as exc:  # handed to the waiting task, as an executor would
                error = exc
            with contextlib.suppress(RuntimeError):  # a closed loop (shutdown): nobody waits
                loop.call_soon_threadsafe(_settle, done, error)


_Job = tuple[list[Prepared], asyncio.AbstractEventLoop, "asyncio.Future[None]"]


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class GroupCommitter:
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._writer = _Writer(receiver.commit)
        self._pending: list[_Waiting] = []
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
        """Commit batches until none waits. Every waiting session is answered, whatever
        happens: should the commit raise, that batch gets 451; should this task be
        cancelled (shutdown), so does everyone still waiting."""
        while self._pending:
            batch, self._pending = take_batch(self._pending)
            try:
                await self._writer.run([item for item, _ in batch])
            except Exception:
                log.exception("a group commit of %d messages failed", len(batch))
                _answer(batch, failed=True)
            except BaseException:
                _answer(batch + self._pending, failed=True)
                self._pending = []
                raise
            else:
                _answer(batch, failed=False)


def _answer(batch: list[_Waiting], *, failed: bool) -> None:
    for item, future in batch:
        if failed:  # whatever a half-done commit wrote in them, the answer is 451
            item.replies, item.ids = [TEMPFAIL] * len(item.rows), []
        if not future.done():
            future.set_result(None)
