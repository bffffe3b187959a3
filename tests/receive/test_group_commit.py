"""The group commit's writer thread: messages from one loop committed together, each
answered once its commit is done, and the thread gone with its committer (it must not
keep a receiver, and its database, alive)."""

from __future__ import annotations

import asyncio
import gc
import threading
from concurrent.futures import ThreadPoolExecutor

from crmdrop.receive.batch import GroupCommitter
from crmdrop.receive.service import Prepared
from crmdrop.spool import Spool


class _Recorder:
    """Stands in for a `Receiver`: records the batches it is asked to commit."""

    def __init__(self) -> None:
        self.batches: list[list[Prepared]] = []

    def held_connection(self) -> None:
        return None  # no database: nothing to hold

    def quick_connection(self) -> None:
        return None  # no commits on the event loop: every one goes to the thread

    def commit(self, batch: list[Prepared], held: None = None) -> None:
        self.batches.append(batch)
        for item in batch:
            item.replies = ["250 committed"]


def test_every_message_is_answered_after_its_commit_and_the_thread_ends_with_the_committer() -> (
    None
):
    before = set(threading.enumerate())
    recorder = _Recorder()
    committer = GroupCommitter(recorder)  # type: ignore[arg-type]

    async def ten_sessions(committer: GroupCommitter) -> list[Prepared]:
        items = [Prepared(Spool.of(b"m%d" % i), [], None, "", "smtp") for i in range(10)]
        return await asyncio.wait_for(
            asyncio.gather(*(committer.store(item) for item in items)), timeout=30
        )

    with ThreadPoolExecutor(max_workers=1) as pool:  # a loop of its own, as in the server
        done = pool.submit(asyncio.run, ten_sessions(committer)).result()
    assert [item.replies for item in done] == [["250 committed"]] * 10
    assert sorted(id(i) for b in recorder.batches for i in b) == sorted(id(i) for i in done)
    writers = [t for t in set(threading.enumerate()) - before if t.name == "crmdrop-commit"]
    assert len(writers) == 1
    del committer, done
    gc.collect()
    for thread in writers:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in writers)
