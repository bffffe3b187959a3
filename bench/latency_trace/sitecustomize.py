"""Timestamps for `bench_latency.py --trace` (bench only: on PYTHONPATH of the served
processes, so that it patches `crmdrop serve` and its worker child at start-up).

Each process appends JSON lines to $CRMDROP_LATENCY_TRACE, with `time.time()` stamps
(one clock for every process of the host): the accept commits (and the ids they
queued), every wake-up signal the worker gets, and each batch's steps.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

_PATH = os.environ.get("CRMDROP_LATENCY_TRACE")
_LOCK = threading.Lock()


def _emit(record: dict[str, Any]) -> None:
    assert _PATH is not None
    line = json.dumps(record) + "\n"
    with _LOCK, open(_PATH, "a") as out:
        out.write(line)


def _patch_accept() -> None:
    """Stamp each group commit: the writer thread's (`commit`) and the event loop's
    (`try_commit`, SQLite; it returns False when it left the batch to the thread)."""
    from crmdrop.receive import service

    commit, try_commit = service.Receiver.commit, service.Receiver.try_commit

    def stamped(original: Any) -> Any:
        def wrapped(self: Any, batch: list[Any], *args: Any, **kwargs: Any) -> Any:
            start = time.time()
            done = original(self, batch, *args, **kwargs)
            if done is not False:
                ids = [i for item in batch for i in item.ids]
                _emit({"k": "accept", "t0": start, "t1": time.time(), "ids": ids})
            return done

        return wrapped

    service.Receiver.commit = stamped(commit)  # type: ignore[method-assign]
    service.Receiver.try_commit = stamped(try_commit)  # type: ignore[method-assign]


_BATCH = threading.local()


def _patch_worker() -> None:
    from crmdrop import serve, worker
    from crmdrop.store.signals import PgListener, WakeSocket

    def stamp(name: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            record = getattr(_BATCH, "record", None)
            if record is not None:
                record[name] = time.time()
                record[name + "_cpu"] = time.thread_time()
                if name == "claim":
                    record["ids"] = [delivery.id for delivery in result.deliveries]
            return result

        return wrapped

    worker._claim = stamp("claim", worker._claim)
    worker._parse_all = stamp("parse", worker._parse_all)
    worker._decide_batch = stamp("decide", worker._decide_batch)
    # The loop's step: `file_next` (`process_one` before it).
    name = "file_next" if hasattr(serve, "file_next") else "process_one"
    step = getattr(serve, name)

    def traced(*args: Any, **kwargs: Any) -> Any:
        _BATCH.record = {"k": "batch", "t0": time.time(), "t0_cpu": time.thread_time()}
        result = step(*args, **kwargs)
        record = _BATCH.record
        record["t1"] = time.time()
        record["t1_cpu"] = time.thread_time()
        if record.get("ids"):
            _emit(record)
        else:
            _emit({"k": "empty", "t0": record["t0"], "t1": record["t1"]})
        _BATCH.record = None
        return result

    setattr(serve, name, traced)

    def woken(fn: Any) -> Any:
        def wrapped() -> None:
            _emit({"k": "wake", "t": time.time()})
            fn()

        return wrapped

    class Listener(PgListener):
        def __init__(self, url: str, handlers: dict[str, Any], on_lost: Any) -> None:
            super().__init__(url, {k: woken(v) for k, v in handlers.items()}, on_lost)

    class Socket(WakeSocket):
        def __init__(self, path: Any, event: threading.Event) -> None:
            super().__init__(path, event)
            event.set = woken(event.set)  # type: ignore[method-assign]

    # `serve` imports both from `crmdrop.store.signals` and starts them by these names.
    for attr, cls in (("PgListener", Listener), ("WakeSocket", Socket)):
        setattr(serve, attr, cls)


def _patch_begin() -> None:
    """SQLite: time each `BEGIN IMMEDIATE` (waiting for the other process's write lock)."""
    from sqlalchemy.engine import Connection

    from crmdrop.store import db

    def timed(fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            start = time.time()
            result = fn(*args, **kwargs)
            waited = time.time() - start
            record = getattr(_BATCH, "record", None)
            if record is not None:
                record["lock"] = record.get("lock", 0.0) + waited
            elif waited > 0.0005:
                _emit({"k": "lock", "t": start, "wait": waited})
            return result

        return wrapped

    if hasattr(db, "_begin_immediate"):  # crmdrop's own wait for the lock
        db._begin_immediate = timed(db._begin_immediate)
        return
    original = Connection.exec_driver_sql
    timed_begin = timed(original)

    def exec_driver_sql(self: Any, statement: str, *args: Any, **kwargs: Any) -> Any:
        if statement == "BEGIN IMMEDIATE":
            return timed_begin(self, statement, *args, **kwargs)
        return original(self, statement, *args, **kwargs)

    Connection.exec_driver_sql = exec_driver_sql  # type: ignore[method-assign]


if _PATH:
    _patch_accept()
    _patch_worker()
    _patch_begin()
