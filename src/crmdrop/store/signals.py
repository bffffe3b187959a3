"""Signals between crmdrop processes, so that nobody has to poll fast.

- PostgreSQL: `NOTIFY` inside the writing transaction (delivered at its commit, to
  every listening process on every host); `PgListener` is the receiving end.
- SQLite (one host): the worker binds a Unix datagram socket beside the database
  file, and an accepting process sends it one byte after each commit (`Waker.poke`).

A signal is only a hint: whoever waits on one still polls slowly, and a listener that
loses its connection reports it (`on_lost`) so that nothing relies on what it missed.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import socket
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

QUEUE = "crmdrop_queue"  # a delivery was queued
DIRECTORY = "crmdrop_directory"  # a user, token or user address changed

_NOTIFY = text("SELECT pg_notify(:channel, '')")
_NOTIFY_SQL = "SELECT pg_notify(%s, '')"  # psycopg's parameter style


def notify(conn: Connection | Session, channel: str) -> None:
    """PostgreSQL: tell every listener once the caller's transaction commits.

    On a Core connection (the accept path's group commit) on psycopg's own connection,
    in the same transaction: no SQLAlchemy execution (a third of a commit's Python)."""
    if isinstance(conn, Connection):
        conn.connection.driver_connection.execute(_NOTIFY_SQL, (channel,))  # type: ignore[union-attr]
        return
    conn.execute(_NOTIFY, {"channel": channel})


class Outbound(enum.Enum):
    """A queue of outgoing messages that a transaction added to (`mark_queued`)."""

    REPLIES = "replies"
    WEBHOOKS = "webhooks"


_QUEUED = "crmdrop.outbound_queued"


def mark_queued(session: Session, kind: Outbound) -> None:
    """Note in the session that its transaction queued an outgoing message: the worker
    wakes that queue's sender after the commit, and only then (`queued_in`)."""
    session.info.setdefault(_QUEUED, set()).add(kind)


def queued_in(session: Session) -> set[Outbound]:
    """The outgoing queues this session's transaction added to."""
    found: set[Outbound] = session.info.get(_QUEUED, set())
    return found


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as psycopg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgListener(threading.Thread):
    """LISTENs on `handlers`' channels and calls the handler of each notification.

    `connected` is set while notifications can arrive; `on_lost` is called whenever
    they may have been missed (before each (re)connection), so callers drop any state
    that a missed notification would have invalidated.
    """

    def __init__(
        self,
        url: str,
        handlers: dict[str, Callable[[], None]],
        on_lost: Callable[[], None],
    ) -> None:
        super().__init__(name="crmdrop-listen", daemon=True)
        self.url = libpq_url(url)
        self.handlers = handlers
        self.on_lost = on_lost
        self.connected = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._listen()
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
            self.connected.clear()
            self.on_lost()
            self.stopping.wait(1.0)

    def _listen(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for channel in self.handlers:
                conn.execute(f"LISTEN {channel}")
            self.connected.set()
            self.on_lost()  # anything before LISTEN took effect was not heard
            while not self.stopping.is_set():
                for note in conn.notifies(timeout=1.0):
                    self.handlers[note.channel]()

    def stop(self) -> None:
        self.stopping.set()


def wake_path(db_file: Path) -> Path:
    return db_file.with_name(db_file.name + ".wake")


class Waker:
    """SQLite: the accepting side of the worker's wake-up socket, one socket kept for
    every poke (a socket per poke was three system calls per group commit). A datagram
    `sendto` is one system call: threads may share it. The socket is closed with the
    `Waker` (`weakref.finalize`), so a forgotten one leaves no open file behind."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        weakref.finalize(self, self._sock.close)

    def poke(self) -> None:
        """One datagram to the worker (never blocks, never fails)."""
        # No worker listening, or its buffer is full: it is awake anyway.
        with contextlib.suppress(OSError):
            self._sock.sendto(b"q", self.path)


class WakeSocket(threading.Thread):
    """SQLite: the worker's end; sets `event` whenever a datagram arrives."""

    def __init__(self, path: Path, event: threading.Event) -> None:
        super().__init__(name="crmdrop-wake", daemon=True)
        self.path = path
        self.event = event
        self.stopping = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path.exists():
            os.unlink(path)
        self.sock.bind(str(path))  # OSError if the path is too long: the caller polls then
        self.sock.settimeout(1.0)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.sock.recv(64)
            except TimeoutError:
                continue
            except OSError:
                return
            self.event.set()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=2)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
