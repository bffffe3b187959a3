"""Group commit for the SMTP/LMTP servers.

Messages whose DATA ends while a commit is in flight wait, and are stored
together by the next one: one transaction (one fsync) for many messages, and
still no reply before a message's own commit (SPEC §6.1). With one session,
it is exactly one commit per message; no timer, no added delay.

Under load a commit also waits a little for company (`COMMIT_DELAY`, as PostgreSQL's
`commit_delay`): a commit costs a fixed ≈ 0.18 ms of CPU (the fsync, the pages every
transaction rewrites) besides ≈ 0.09 ms per message, and behind an MTA whose sessions
each wait for their reply, commits would otherwise carry one message each. It waits
only while messages arrive faster than one per `COMMIT_DELAY` (so never at a low rate)
and only while some open session is not already waiting on it (a client with N
sessions that all wait is answered at once), and never while the writer thread is
busy (PostgreSQL, or SQLite's thread): its next commit gathers what comes meanwhile.

On SQLite the commit runs on the event loop itself, once per loop iteration: the
messages whose DATA ended in this iteration are committed together by a callback the
first of them schedules (`call_soon`), then answered. A local commit is a write and an
fsync; on a disk that syncs in well under a millisecond, handing it to a thread cost
more of the loop's time (the queue, the GIL handed back and forth, the loop woken from
another thread) than the commit blocks it. The
loop never waits for SQLite's write lock: held elsewhere (the worker filing), the
batch goes to the thread, as does a batch of large messages (`LOOP_COMMIT_BYTES`); and
`SLOW_STREAK` commits in a row that took long (a slow disk) send the commits of the next
`SLOW_HOLD` seconds there too. One slow commit alone does not: a WAL checkpoint, or the
GIL held by another thread meanwhile, makes one now and then on any disk.

One writer thread takes the other messages (PostgreSQL's always: a commit there is
several round trips) from a queue, handed over at the end of the loop iteration in
which their DATA ended: the next batch starts as soon as a commit ends, without a round
trip through the event loop, and the loop hears back once per batch
(`call_soon_threadsafe`). Its connection stays warm, and SQLite has one writer
anyway. It is also where a failed batch is retried one by one (451 for a message that
fails alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import resource
import threading
import time
import weakref

from crmdrop.receive.service import TEMPFAIL, HeldConnection, Prepared, Receiver

log = logging.getLogger(__name__)

MAX_BATCH = 64
# Raw bytes per group commit: 64 messages of 25 MB would be 1.6 GB in one transaction.
MAX_BATCH_BYTES = 32 * 1024 * 1024
# SLOW_STREAK commits in a row on the event loop that each took longer than this (seconds
# of wall time) send the commits of the next SLOW_HOLD seconds to the thread: the loop
# serves every session.
SLOW_COMMIT = 0.005
SLOW_STREAK = 3
SLOW_HOLD = 2.0
# A batch carrying more raw bytes than this is committed by the thread: writing a large
# message into the database (a spooled one streams from its file) would stall the loop.
LOOP_COMMIT_BYTES = 1024 * 1024
# Seconds a commit waits for more messages when they arrive faster than one per this
# long. 4 ms carries ≈ 3 messages at 500 msg/s (CPU per message 0.27 → 0.13 ms).
COMMIT_DELAY = 0.004
# The arrival gap is a moving average (this weight for the newest gap); one gap counts
# at most this long, so that a busy spell after an idle one is recognised within a few
# messages.
GAP_WEIGHT = 0.2
GAP_CAP = 10 * COMMIT_DELAY
# A thread's involuntary context switches so far (Linux): a commit that took long
# because the thread was preempted on a busy machine says nothing about the disk.
_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", None)

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
        self._quick = receiver.quick_connection()  # the event loop's (None: no commits there)
        if self._quick is not None:
            weakref.finalize(self, self._quick.close)
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that gathers
        self._pending: list[_Waiting] = []  # DATA ended, not yet committed nor handed over
        self._flush_at: asyncio.TimerHandle | asyncio.Handle | None = None
        self._thread_until = 0.0  # its time before which commits go to the thread
        self._slow_streak = 0  # commits on the loop found slow in a row
        self._handed = self._stored = 0  # messages handed to the thread, and done there
        self._last_arrival = -math.inf  # that loop's time of the last `store`
        self._gap = GAP_CAP  # the moving average of the time between two stores
        self.sessions = 0  # open SMTP/LMTP sessions (`session_began`, `session_ended`)

    def session_began(self) -> None:
        self.sessions += 1

    def session_ended(self) -> None:
        self.sessions -= 1

    async def store(self, prepared: Prepared) -> Prepared:
        """Return once `prepared` is committed (its replies filled in; 451 should the
        commit fail)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self._gathers(loop):
            self._gather((prepared, future), loop)
        else:
            self._hand_over([(prepared, future)], loop)
        await future
        return prepared

    def _gathers(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Messages of the first loop that stores are gathered there (a server has one);
        any other loop's go straight to the thread."""
        if self._loop is None:
            self._loop = loop
        return loop is self._loop

    def _gather(self, waiting: _Waiting, loop: asyncio.AbstractEventLoop) -> None:
        """Keep `waiting` for the next flush: at the end of this loop iteration, or
        `COMMIT_DELAY` later when more messages are due within it."""
        now = loop.time()
        gap = min(now - self._last_arrival, GAP_CAP)
        self._gap += GAP_WEIGHT * (gap - self._gap)
        self._last_arrival = now
        self._pending.append(waiting)
        count = len(self._pending)
        if count == 1:
            if self._gap < COMMIT_DELAY and self.sessions > 1 and not self._thread_busy():
                self._flush_at = loop.call_at(now + COMMIT_DELAY, self._flush)
            else:
                self._flush_at = loop.call_soon(self._flush)
        elif isinstance(self._flush_at, asyncio.TimerHandle) and (
            count >= self.sessions or count >= MAX_BATCH
        ):  # nobody else could join: no reason to wait
            self._flush_at.cancel()
            self._flush_at = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """The messages gathered: committed here, in batches, or handed to the thread
        (PostgreSQL; the write lock busy, a failure, commits found slow)."""
        pending, self._pending, self._flush_at = self._pending, [], None
        loop, quick = self._loop, self._quick
        assert loop is not None
        while pending:
            batch, pending = take_batch(pending)
            large = sum(len(item.raw) for item, _ in batch) > LOOP_COMMIT_BYTES
            if quick is None or large or loop.time() < self._thread_until:
                self._hand_over(batch, loop)
            elif self._commit_here(batch, quick, loop):
                _answer(batch, failed=False)
            else:
                self._hand_over(batch, loop)

    def _commit_here(
        self, batch: list[_Waiting], quick: HeldConnection, loop: asyncio.AbstractEventLoop
    ) -> bool:
        """One attempt on the loop; `SLOW_STREAK` commits in a row found slow send the
        next `SLOW_HOLD` seconds' commits to the thread. A commit slow for another reason
        than the disk counts for nothing: this thread preempted (a busy machine), or the
        connection opened by it."""
        opened, switches, start = quick.is_open, _preempted(), time.monotonic()
        done = self.receiver.try_commit([item for item, _ in batch], quick)
        if time.monotonic() - start <= SLOW_COMMIT:
            self._slow_streak = 0
        elif opened and _preempted() == switches:
            self._slow_streak += 1
            if self._slow_streak >= SLOW_STREAK:
                self._thread_until = loop.time() + SLOW_HOLD
                self._slow_streak = 0
        return done

    def _hand_over(self, batch: list[_Waiting], loop: asyncio.AbstractEventLoop) -> None:
        """To the writer thread, which commits (and answers) them."""
        self._start()
        with self._lock:
            self._handed += len(batch)
        for item, future in batch:
            self._queue.put((item, future, loop))

    def _thread_busy(self) -> bool:
        """Whether the writer thread has messages to commit: its next commit will carry
        whatever is handed over meanwhile, no need to wait for company."""
        with self._lock:
            return self._handed > self._stored

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
        with self._lock:
            self._stored += len(batch)
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


def _preempted() -> int:
    """This thread's involuntary context switches so far (0 where unknown)."""
    if _RUSAGE_THREAD is None:
        return 0
    return resource.getrusage(_RUSAGE_THREAD).ru_nivcsw


def _answer(batch: list[_Waiting], failed: bool) -> None:
    for item, future in batch:
        if failed:  # whatever a half-done commit wrote in them, the answer is 451
            item.replies, item.ids = [TEMPFAIL] * len(item.rows), []
        if not future.done():
            future.set_result(None)
