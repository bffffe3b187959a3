"""The dropbox directory (token → owner) answered from memory, and kept honest.

Every RCPT asks who owns a token; asking the database each time costs a thread hop
and a query. `OwnerCache` keeps the answers in the accepting process and forgets
them all the moment the directory changes anywhere:

- every flush that touches a `User` or a `UserAddress` (a new user, a regenerated
  token, an added address, a deactivation...) bumps the `directory_version` row in
  the same transaction and, on PostgreSQL, NOTIFYs `crmdrop_directory`
  (`store/models.py: _directory_changed`, a hook on every ORM session);
- on PostgreSQL each accepting process LISTENs (any number of hosts); while its
  listening connection is down, the cache is not used at all;
- on SQLite (one host) each lookup reads the version row first: a few microseconds.

An answer read from the database is only remembered if no change was seen while it
was being read, so a lookup racing a regeneration cannot bring the old token back.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from crmdrop.dropbox.plan import UserInfo
from crmdrop.store.db import Database
from crmdrop.store.signals import DIRECTORY, PgListener

Owner = tuple[Any, UserInfo]  # (store.accounts.Recipient, UserInfo)


class OwnerCache:
    """Token → owner for one accepting process; see the module docstring."""

    MAX_ENTRIES = 200_000

    def __init__(self, db: Database) -> None:
        self._entries: dict[str, Owner] = {}
        self._generation = 0  # bumped whenever the entries are forgotten
        self._lock = threading.Lock()
        self._version: int | None = None
        self._sqlite: sqlite3.Connection | None = None
        self._listener: PgListener | None = None
        if db.sqlite_file is not None:
            self._sqlite = sqlite3.connect(
                str(db.sqlite_file), check_same_thread=False, isolation_level=None, timeout=5
            )
        elif not db.is_sqlite:
            self._listener = PgListener(db.url, {DIRECTORY: self.forget}, on_lost=self.forget)
            self._listener.start()

    def forget(self) -> None:
        with self._lock:
            self._entries = {}
            self._generation += 1

    def generation(self) -> int:
        """Taken before reading the database; hand it back to `remember`."""
        self._check_version()
        return self._generation

    def get(self, token: str) -> Owner | None:
        """The remembered owner, or None: ask the database (then `remember`)."""
        if not self._check_version():
            return None
        return self._entries.get(token)

    def remember(self, token: str, owner: Owner, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # the directory changed while it was read
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {}
            self._entries[token] = owner

    def _check_version(self) -> bool:
        """Whether the entries may be used now (forgetting them if they are stale)."""
        if self._listener is not None:
            return self._listener.connected.is_set()
        if self._sqlite is None:
            return False  # an in-memory database: nothing to share, nothing cached
        with self._lock:
            try:
                row = self._sqlite.execute("SELECT version FROM directory_version").fetchone()
            except sqlite3.Error:
                row = None  # busy, or not migrated yet: ask the database this time
            version = row[0] if row else None
            if version != self._version:
                self._entries = {}
                self._generation += 1
                self._version = version
        return version is not None

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        if self._sqlite is not None:
            self._sqlite.close()
