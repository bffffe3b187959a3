"""Group commit for the SMTP/LMTP servers.

Messages whose DATA ends while a commit is in flight wait, and are stored
together by the next one: one transaction (one fsync) for many messages, and
still no reply before a message's own commit (SPEC §6.1). With one session,
it is exactly one commit per message; no timer, no added delay.

One writer thread takes the messages straight from a queue: the next batch starts
as soon as a commit ends, without a round trip through the event loop, and the loop
hears back once per batch (`call_soon_threadsafe`). Its connection stays warm, and
SQLite has one writer anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import weakref

from crmdrop.receive.service import TEMPFAIL, Prepared, Receiver

log = logging.getLogger(__name__)

MAX_BATCH = 64
# Raw bytes per group commit: 64 messages of 25 MB would be 1.6 GB in one transaction.
MAX_BATCH_BYTES = 32 * 1024 * 1024

_Waiting = tuple[Prepared, "asyncio.Future[None]"]
_Queued = tuple[Prepared, "asyncio.Future[None]", asyncio.AbstractEventLoop]


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


class GroupCommitter:
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._held = receiver.held_connection()  # the writer thread's alone

    async def store(self, prepared: Prepared) -> Prepared:
        """Return once `prepared` is committed (its replies filled in; 451 should the
        commit fail)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._start()
        self._queue.put((prepared, future, loop))
        await future
        return prepared

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                # The thread holds the committer weakly and stops once it is gone (woken
                # by `None`), as an executor's thread does: no receiver kept alive.
                self._thread = threading.Thread(
                    target=_serve, args=(weakref.ref(self), self._queue), daemon=True
                )
                self._thread.name = "crmdrop-commit"
                weakref.finalize(self, self._queue.put, None)
                if self._held is not None:
                    weakref.finalize(self, self._held.close)
                self._thread.start()

    def _commit(self, batch: list[_Queued]) -> None:
        failed = False
        try:
            self.receiver.commit([item for item, _, _ in batch], self._held)
        except BaseException:  # a bug: every message of the batch gets 451, the thread goes on
            log.exception("a group commit of %d messages failed", len(batch))
            failed = True
        by_loop: dict[asyncio.AbstractEventLoop, list[_Waiting]] = {}
        for item, future, loop in batch:
            by_loop.setdefault(loop, []).append((item, future))
        for loop, answered in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop (shutdown): nobody waits
                loop.call_soon_threadsafe(_answer, answered, failed)


def _serve(committer: weakref.ref[GroupCommitter], jobs: queue.SimpleQueue[_Queued | None]) -> None:
    """The writer thread: commit whatever waits, batch after batch, until the committer
    is gone."""
    waiting: list[_Queued] = []
    while True:
        if not waiting:
            job = jobs.get()
            if job is None:
                return
            waiting.append(job)
        with contextlib.suppress(queue.Empty):
            while len(waiting) < MAX_BATCH and (job := jobs.get_nowait()) is not None:
                waiting.append(job)
        taken, _ = take_batch([(item, future) for item, future, _ in waiting])
        batch, waiting = waiting[: len(taken)], waiting[len(taken) :]
        owner = committer()
        if owner is None:
            return
        owner._commit(batch)
        del owner


def _answer(batch: list[_Waiting], failed: bool) -> None:
    for item, future in batch:
        if failed:  # whatever a half-done commit wrote in them, the answer is 451
            item.replies, item.ids = [TEMPFAIL] * len(item.rows), []
        if not future.done():
            future.set_result(None)
