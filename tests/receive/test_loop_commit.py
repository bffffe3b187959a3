"""The group commit on the event loop (SQLite): the messages whose DATA ended in one loop
iteration are committed together on the loop, each answered only after that commit; the
writer thread takes a batch when the write lock is held elsewhere (the loop never waits
for it), when the attempt fails (retried there: 451 if it fails again), and for a while
after a commit found slow."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from crmdrop.config import load_settings
from crmdrop.dropbox.address import dropbox_addresses
from crmdrop.dropbox.plan import DropboxKind
from crmdrop.receive import batch
from crmdrop.receive.batch import GroupCommitter
from crmdrop.receive.service import TEMPFAIL, Prepared, Receiver
from crmdrop.spool import Spool
from crmdrop.store import accounts
from crmdrop.store.db import Database
from crmdrop.store.models import Delivery


def _in_a_loop(coroutine: Any) -> Any:
    """Run in a thread of its own: a browser test's event loop may run in this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coroutine, timeout=30)).result()


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "crmdrop-commit"]


class _NoConnection:
    is_open = True

    def close(self) -> None:
        pass


class _Stub:
    """Stands in for a `Receiver`: records where and what it is asked to commit."""

    def __init__(self, *, on_loop: bool = True) -> None:
        self.on_loop = on_loop  # what try_commit answers
        self.tried: list[list[Prepared]] = []
        self.committed: list[list[Prepared]] = []
        self.answered: list[Prepared] = []  # filled by the sessions once store() returns

    def held_connection(self) -> None:
        return None

    def quick_connection(self) -> _NoConnection:
        return _NoConnection()  # a connection for the loop: commits may run there

    def try_commit(self, items: list[Prepared], quick: _NoConnection) -> bool:
        assert not any(item in self.answered for item in items)  # nobody answered yet
        self.tried.append(items)
        if self.on_loop:
            for item in items:
                item.replies = ["250 on the loop"]
        return self.on_loop

    def commit(self, items: list[Prepared], held: None = None) -> None:
        self.committed.append(items)
        for item in items:
            item.replies = [TEMPFAIL]  # what a message that fails alone gets


async def _sessions(committer: GroupCommitter, stub: _Stub, count: int) -> list[Prepared]:
    async def one(n: int) -> Prepared:
        item = await committer.store(Prepared(Spool.of(b"m%d" % n), [], None, "", "smtp"))
        stub.answered.append(item)
        return item

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _rounds(committer: GroupCommitter, stub: _Stub, count: int) -> None:
    """`count` rounds of two sessions, one after the other."""
    for _ in range(count):
        await _sessions(committer, stub, 2)


def test_messages_ended_in_one_iteration_are_committed_together_on_the_loop() -> None:
    stub = _Stub()
    done = _in_a_loop(_sessions(GroupCommitter(stub), stub, 5))  # type: ignore[arg-type]
    assert [len(items) for items in stub.tried] == [5]  # one transaction for the five
    assert [item.replies for item in done] == [["250 on the loop"]] * 5
    assert stub.committed == []  # the thread had nothing to do


def test_a_failed_attempt_on_the_loop_goes_to_the_thread_which_answers_451() -> None:
    stub = _Stub(on_loop=False)  # the lock was busy, or the attempt failed
    done = _in_a_loop(_sessions(GroupCommitter(stub), stub, 3))  # type: ignore[arg-type]
    assert [len(items) for items in stub.tried] == [3]
    assert sorted(id(i) for items in stub.committed for i in items) == sorted(id(i) for i in done)
    assert [item.replies for item in done] == [[TEMPFAIL]] * 3


def test_after_slow_commits_in_a_row_the_next_ones_go_to_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batch, "SLOW_COMMIT", -1.0)  # every commit on the loop is "slow"
    stub = _Stub()
    committer = GroupCommitter(stub)  # type: ignore[arg-type]

    # SLOW_STREAK rounds on the loop, found slow; the last to the thread (for SLOW_HOLD s)
    _in_a_loop(_rounds(committer, stub, batch.SLOW_STREAK + 1))
    assert [len(items) for items in stub.tried] == [2] * batch.SLOW_STREAK
    assert sum(len(items) for items in stub.committed) == 2


def test_one_slow_commit_now_and_then_keeps_the_commits_on_the_loop() -> None:
    stub = _Stub()
    real_try = stub.try_commit
    calls = iter(range(1000))

    def every_other_one_slow(items: list[Prepared], quick: _NoConnection) -> bool:
        if next(calls) % 2 == 0:
            time.sleep(batch.SLOW_COMMIT * 2)  # a checkpoint, say: a wait, not a preemption
        return real_try(items, quick)

    stub.try_commit = every_other_one_slow  # type: ignore[method-assign]
    committer = GroupCommitter(stub)  # type: ignore[arg-type]

    _in_a_loop(_rounds(committer, stub, batch.SLOW_STREAK * 3))
    assert len(stub.tried) == batch.SLOW_STREAK * 3 and stub.committed == []


def test_a_large_message_is_committed_by_the_thread() -> None:
    stub = _Stub()
    committer = GroupCommitter(stub)  # type: ignore[arg-type]
    large = Prepared(Spool.of(b"x" * (batch.LOOP_COMMIT_BYTES + 1)), [], None, "", "smtp")
    done = _in_a_loop(committer.store(large))
    assert stub.tried == [] and stub.committed == [[done]]  # the loop would stall writing it


def _receiver(tmp_path: Path) -> tuple[Receiver, str]:
    settings = load_settings(data_dir=tmp_path, domain="dropbox.test")
    db = Database(settings.db_url)
    db.migrate()
    with db.writing() as session:
        user = accounts.add_user(session, "u@mycorp.example", name="U", account="acme")
        address = dropbox_addresses(user.token, "dropbox.test")[DropboxKind.NOTE]
    return Receiver(db, settings), address


def _prepare(receiver: Receiver, address: str, n: int) -> Prepared:
    _, rcpt = receiver.check_recipient(address)
    assert rcpt is not None
    raw = b"From: u@mycorp.example\r\nTo: c@client.example\r\nSubject: %d\r\n\r\nhi\r\n" % n
    return receiver.prepare(
        mail_from="u@mycorp.example", rcpts=[rcpt], raw=Spool.of(raw), protocol="smtp", peer="x"
    )


def _stored(db: Database) -> int:
    with db.reading() as session:
        return int(session.scalar(select(func.count()).select_from(Delivery)) or 0)


def test_sqlite_commits_on_the_loop_and_answers_after_the_commit(tmp_path: Path) -> None:
    receiver, address = _receiver(tmp_path)
    committer = GroupCommitter(receiver)
    seen: list[int] = []

    async def three() -> list[Prepared]:
        items = [_prepare(receiver, address, n) for n in range(3)]
        done = await asyncio.gather(*(committer.store(item) for item in items))
        seen.append(_stored(receiver.db))  # read by another connection, once answered
        return list(done)

    before = _writer_threads()
    done = _in_a_loop(three())
    assert seen == [3]
    assert all(item.replies[0].startswith("250 2.0.0 OK: queued as") for item in done)
    assert not set(_writer_threads()) - set(before)  # no thread was needed
    receiver.db.dispose()


def test_sqlite_with_the_write_lock_held_elsewhere_the_loop_does_not_wait(
    tmp_path: Path,
) -> None:
    receiver, address = _receiver(tmp_path)
    committer = GroupCommitter(receiver)
    other = receiver.db.write_engine.connect()
    other.begin()  # BEGIN IMMEDIATE: the write lock, as the worker holds it while filing
    ticks: list[int] = []
    before = _writer_threads()

    async def store_while_locked() -> Prepared:
        stored = asyncio.ensure_future(committer.store(_prepare(receiver, address, 1)))
        for tick in range(5):  # the loop keeps running while the thread waits for the lock
            await asyncio.sleep(0.01)
            ticks.append(tick)
        assert not stored.done()  # no answer before the commit
        await asyncio.to_thread(other.rollback)  # the lock is free: the thread commits
        return await stored

    done = _in_a_loop(store_while_locked())
    other.close()
    assert ticks == [0, 1, 2, 3, 4]
    assert done.replies[0].startswith("250 2.0.0 OK: queued as")
    assert _stored(receiver.db) == 1
    assert set(_writer_threads()) - set(before)  # the thread took it
    receiver.db.dispose()


# --- the commit delay under load -------------------------------------------------------


async def _yield_a_few() -> None:
    """A few loop iterations, far less than `COMMIT_DELAY`: a commit scheduled for the
    end of the current iteration has run by then, a delayed one has not."""
    for _ in range(3):
        await asyncio.sleep(0)


def _busy(committer: GroupCommitter, sessions: int) -> Any:
    """`sessions` open sessions, and a burst that says messages come fast."""
    for _ in range(sessions):
        committer.session_began()
    burst = [Prepared(Spool.of(b"b%d" % n), [], None, "", "smtp") for n in range(15)]
    return asyncio.gather(*(committer.store(item) for item in burst))


def _item(name: bytes) -> Prepared:
    return Prepared(Spool.of(name), [], None, "", "smtp")


def test_under_load_a_commit_waits_for_the_next_message_and_carries_both() -> None:
    stub = _Stub()
    committer = GroupCommitter(stub)  # type: ignore[arg-type]
    first, second = _item(b"first"), _item(b"second")

    async def run() -> bool:
        await _busy(committer, sessions=20)
        waiting = asyncio.ensure_future(committer.store(first))
        await _yield_a_few()
        waited = not any(first in items for items in stub.tried)
        await asyncio.gather(waiting, committer.store(second))
        return waited

    assert _in_a_loop(run())  # not committed at the end of its iteration...
    assert stub.tried[-1] == [first, second]  # ...but with the one that came next
    assert first.replies == second.replies == ["250 on the loop"]


def test_a_commit_waits_for_no_one_once_every_session_waits_on_it() -> None:
    stub = _Stub()
    committer = GroupCommitter(stub)  # type: ignore[arg-type]
    first, second = _item(b"first"), _item(b"second")

    async def run() -> list[Prepared]:
        await _busy(committer, sessions=2)
        both = asyncio.gather(committer.store(first), committer.store(second))
        await _yield_a_few()  # nobody else could join: committed without the delay
        tried = [item for items in stub.tried for item in items]
        await both
        return tried

    assert {id(first), id(second)} <= {id(item) for item in _in_a_loop(run())}
    assert stub.tried[-1] == [first, second]


def test_at_a_low_rate_or_after_a_quiet_spell_no_commit_waits() -> None:
    stub = _Stub()
    committer = GroupCommitter(stub)  # type: ignore[arg-type]
    lone, after_quiet = _item(b"lone"), _item(b"after a quiet spell")

    async def committed_at_once(item: Prepared) -> bool:
        stored = asyncio.ensure_future(committer.store(item))
        await _yield_a_few()
        await stored
        return [item] in stub.tried and stub.tried.index([item]) == len(stub.tried) - 1

    async def run() -> tuple[bool, bool]:
        for _ in range(20):
            committer.session_began()
        at_once = await committed_at_once(lone)  # the first message: no rate seen yet
        await _busy(committer, sessions=0)
        await asyncio.sleep(batch.GAP_CAP * 2)  # the burst is over
        return at_once, await committed_at_once(after_quiet)

    assert _in_a_loop(run()) == (True, True)


def test_a_slow_commit_stays_on_the_loop_when_the_thread_was_preempted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batch, "SLOW_COMMIT", -1.0)  # every commit on the loop is "slow"
    switches = iter(range(1000))
    monkeypatch.setattr(batch, "_preempted", lambda: next(switches))  # ...and preempted
    stub = _Stub()
    committer = GroupCommitter(stub)  # type: ignore[arg-type]

    _in_a_loop(_rounds(committer, stub, batch.SLOW_STREAK + 1))
    assert [len(items) for items in stub.tried] == [2] * (batch.SLOW_STREAK + 1)  # on the loop
    assert stub.committed == []


def test_a_slow_first_commit_that_opened_the_connection_stays_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batch, "SLOW_COMMIT", -1.0)
    monkeypatch.setattr(_NoConnection, "is_open", False)  # each commit opens it
    stub = _Stub()
    committer = GroupCommitter(stub)  # type: ignore[arg-type]

    _in_a_loop(_rounds(committer, stub, batch.SLOW_STREAK + 1))
    assert [len(items) for items in stub.tried] == [2] * (batch.SLOW_STREAK + 1)
    assert stub.committed == []


def test_sqlite_many_sessions_out_of_step_each_stored_once_in_shared_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, address = _receiver(tmp_path)
    committer = GroupCommitter(receiver)
    commits: list[int] = []
    real_try = receiver.try_commit

    def counted(items: list[Prepared], quick: Any) -> bool:
        commits.append(len(items))
        return real_try(items, quick)

    monkeypatch.setattr(receiver, "try_commit", counted)
    for _ in range(20):
        committer.session_began()

    async def session(n: int) -> list[Prepared]:
        done = []
        for k in range(6):
            done.append(await committer.store(_prepare(receiver, address, n * 100 + k)))
            await asyncio.sleep(0.001 * (n % 3))  # sessions out of step, as an MTA's are
        return done

    async def ten() -> list[list[Prepared]]:
        return list(await asyncio.gather(*map(session, range(10))))

    answered = [item for done in _in_a_loop(ten()) for item in done]
    ids = [int(item.replies[0].rsplit(" ", 1)[1]) for item in answered]
    assert len(set(ids)) == 60 and _stored(receiver.db) == 60  # each stored once, answered
    assert sum(commits) == 60 and len(commits) < 30  # in batches, not one commit each
    receiver.db.dispose()


class _Blocking:
    """Stands in for a PostgreSQL `Receiver`: every commit in the thread, the first one
    held until `release` is set."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.batches: list[list[Prepared]] = []

    def held_connection(self) -> None:
        return None

    def quick_connection(self) -> None:
        return None

    def commit(self, items: list[Prepared], held: None = None) -> None:
        self.entered.set()
        self.release.wait(timeout=30)
        self.batches.append(items)
        for item in items:
            item.replies = ["250 committed"]


def test_no_wait_while_the_writer_thread_is_busy_its_next_commit_gathers() -> None:
    stub = _Blocking()
    committer = GroupCommitter(stub)  # type: ignore[arg-type]
    later = _item(b"later")

    async def run() -> int:
        burst = _busy(committer, sessions=20)  # handed to the thread, held there
        await asyncio.to_thread(stub.entered.wait, 30)
        before = committer._queue.qsize()  # the thread takes nothing more meanwhile
        waiting = asyncio.ensure_future(committer.store(later))
        await _yield_a_few()
        queued = committer._queue.qsize() - before  # handed over at once, not held
        stub.release.set()
        await asyncio.gather(burst, waiting)
        return queued

    assert _in_a_loop(run()) == 1
    assert later.replies == ["250 committed"]
