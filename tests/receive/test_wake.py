"""SQLite: the accepting side wakes the worker with one datagram per group commit, on one
socket kept for all of them (`Waker`); with no worker listening, a poke is a no-op."""

from __future__ import annotations

import threading
from pathlib import Path

from crmdrop.store.signals import Waker, WakeSocket, wake_path


def test_every_poke_wakes_the_worker_and_none_fails_without_one(tmp_path: Path) -> None:
    path = wake_path(tmp_path / "crmdrop.db")
    waker = Waker(path)
    waker.poke()  # nobody listens yet: nothing happens, nothing raises
    woken = threading.Event()
    listener = WakeSocket(path, woken)
    listener.start()
    try:
        for _ in range(3):  # the same socket, poke after poke
            woken.clear()
            waker.poke()
            assert woken.wait(10)
    finally:
        listener.stop()
    waker.poke()  # the worker has gone: still nothing raises
