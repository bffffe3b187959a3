"""Limits for the public SMTP port: sessions in all and per client IP, and a tarpit,
then a refusal, for a client that tries many unknown dropbox addresses (a token guesser).

Plain bookkeeping with the clock passed in, so it is tested without waiting; the SMTP
shell (`receive/smtp.py`) asks it at connect and at each RCPT. The counts live in a
table of `SlotCounts`: private memory for one acceptor process, or a file mapped by
every acceptor of `serve --acceptors N`, so that N processes enforce one limit, not N.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from crmdrop.config import Settings

TOO_MANY_SESSIONS = "421 4.7.0 Too many connections, please try again later"
TOO_MANY_FROM_YOU = "421 4.7.0 Too many connections from your address, please try again later"
GUESSING = "421 4.7.0 Too many unknown recipients from your address, please try again later"

WINDOW = 3600.0  # seconds an unknown recipient counts against its client
BUCKETS = 6  # ... counted in steps of WINDOW / BUCKETS: it counts for 50 to 60 minutes
SLOTS = 32768  # client IPs hash into these; two IPs in one slot share their counts
MAX_ROWS = 16  # acceptor processes per host (one row each)
LIMITS_FILE = "smtp-limits.map"  # in the data directory: shared by the acceptors
_HEAD = struct.Struct("<16s")  # the hash key, the same for every process of the file
_ROW_HEAD = struct.Struct("<qq")  # owner pid (0: never used, -1: free), sessions in all
_SLOT = struct.Struct("<i" + "ii" * BUCKETS)  # sessions; BUCKETS x (step, unknown rcpts)
_ROW = _ROW_HEAD.size + SLOTS * _SLOT.size


class SlotCounts:
    """Sessions and unknown recipients per client IP (hashed into slots), in rows: each
    process writes only its own row, and a count is the sum over the rows. Shared by
    `serve --acceptors N` through a mapped file (no lock on the hot path: one writer per
    row); a row whose process died is reclaimed, its sessions zeroed (they died with it),
    its unknown recipients kept."""

    def __init__(self, memory: mmap.mmap, row: int, rows: int, key: bytes) -> None:
        self.memory, self.row, self.rows, self.key = memory, row, rows, key

    @classmethod
    def private(cls) -> SlotCounts:
        """One process alone: an anonymous mapping."""
        memory = mmap.mmap(-1, _HEAD.size + _ROW)
        _ROW_HEAD.pack_into(memory, _HEAD.size, os.getpid(), 0)
        return cls(memory, 0, 1, os.urandom(16))

    @classmethod
    def shared(cls, path: Path, *, fresh: bool) -> SlotCounts:
        """Map `path` and claim a row. `fresh` (the first process of a `serve`): every
        session count in the file is from an earlier run and is zeroed."""
        size = _HEAD.size + MAX_ROWS * _ROW
        with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            if os.fstat(file.fileno()).st_size != size:
                file.truncate(0)
                file.truncate(size)  # sparse: only the slots in use take memory
                file.seek(0)
                file.write(_HEAD.pack(os.urandom(16)))
                file.flush()
            memory = mmap.mmap(file.fileno(), size)
            row = _claim(memory, fresh)
            # Explicitly: the mapping holds a duplicate of the descriptor, and with it
            # the lock, after the file is closed.
            fcntl.flock(file, fcntl.LOCK_UN)
        return cls(memory, row, MAX_ROWS, _HEAD.unpack_from(memory, 0)[0])

    def _slot(self, ip: str) -> int:
        digest = hashlib.blake2b(ip.encode(), key=self.key, digest_size=8).digest()
        return int.from_bytes(digest, "little") % SLOTS

    def _at(self, row: int, slot: int | None = None) -> int:
        base = _HEAD.size + row * _ROW
        return base if slot is None else base + _ROW_HEAD.size + slot * _SLOT.size

    def _live_rows(self) -> list[int]:
        rows = range(self.rows)
        return [r for r in rows if _ROW_HEAD.unpack_from(self.memory, self._at(r))[0] != 0]

    def sessions(self) -> int:
        return sum(_ROW_HEAD.unpack_from(self.memory, self._at(r))[1] for r in self._live_rows())

    def sessions_of(self, ip: str) -> int:
        slot = self._slot(ip)
        return sum(_SLOT.unpack_from(self.memory, self._at(r, slot))[0] for r in self._live_rows())

    def add_session(self, ip: str, change: int) -> None:
        """This process's own row only."""
        head = self._at(self.row)
        pid, total = _ROW_HEAD.unpack_from(self.memory, head)
        _ROW_HEAD.pack_into(self.memory, head, pid, total + change)
        at = self._at(self.row, self._slot(ip))
        values = list(_SLOT.unpack_from(self.memory, at))
        values[0] += change
        _SLOT.pack_into(self.memory, at, *values)

    def unknown(self, ip: str, now: float) -> int:
        """Unknown recipients of `ip` within the window ending at `now`, in all rows."""
        step, slot, found = int(now // (WINDOW / BUCKETS)), self._slot(ip), 0
        for row in self._live_rows():
            values = _SLOT.unpack_from(self.memory, self._at(row, slot))
            for seen, count in zip(values[1::2], values[2::2], strict=True):
                if step - BUCKETS < seen <= step:
                    found += count
        return found

    def add_unknown(self, ip: str, now: float) -> None:
        step = int(now // (WINDOW / BUCKETS))
        at = self._at(self.row, self._slot(ip))
        values = list(_SLOT.unpack_from(self.memory, at))
        bucket = 1 + 2 * (step % BUCKETS)
        if values[bucket] != step:  # a bucket of an older step: start it again
            values[bucket], values[bucket + 1] = step, 0
        values[bucket + 1] += 1
        _SLOT.pack_into(self.memory, at, *values)


def _claim(memory: mmap.mmap, fresh: bool) -> int:
    """Under the file lock: free the rows of dead processes (all but ours if `fresh`),
    zeroing their sessions, and take one for this process."""
    mine = None
    for row in range(MAX_ROWS):
        head = _HEAD.size + row * _ROW
        pid, _total = _ROW_HEAD.unpack_from(memory, head)
        if pid > 0 and (fresh or not _alive(pid)):
            pid = -1
            _ROW_HEAD.pack_into(memory, head, -1, 0)
            for slot in range(SLOTS):
                at = head + _ROW_HEAD.size + slot * _SLOT.size
                memory[at : at + 4] = b"\0\0\0\0"
        if mine is None and pid <= 0:
            mine = row
    if mine is None:
        raise RuntimeError(f"more than {MAX_ROWS} SMTP acceptor processes on this host")
    _ROW_HEAD.pack_into(memory, _HEAD.size + mine * _ROW, os.getpid(), 0)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class RcptPenalty:
    """What an RCPT from this client gets: a delay first (seconds), or a refusal."""

    delay: float
    refuse: bool


@dataclass
class PortGuard:
    """Concurrent sessions and unknown recipients, per client IP."""

    max_sessions: int
    max_per_ip: int
    tarpit_after: int  # unknown recipients in WINDOW before each RCPT is delayed
    refuse_after: int  # unknown recipients in WINDOW before the client is refused
    tarpit_seconds: float
    counts: SlotCounts = field(default_factory=SlotCounts.private)

    @classmethod
    def from_settings(cls, settings: Settings, counts: SlotCounts | None = None) -> PortGuard:
        return cls(
            max_sessions=settings.smtp_max_sessions,
            max_per_ip=settings.smtp_max_sessions_per_ip,
            tarpit_after=settings.smtp_unknown_rcpt_tarpit,
            refuse_after=settings.smtp_unknown_rcpt_limit,
            tarpit_seconds=settings.smtp_tarpit_seconds,
            counts=counts or SlotCounts.private(),
        )

    def enter(self, ip: str, now: float) -> str | None:
        """A new session: None to serve it (and count it), or the 421 to close it with."""
        if self.counts.unknown(ip, now) >= self.refuse_after:
            return GUESSING
        if self.counts.sessions() >= self.max_sessions:
            return TOO_MANY_SESSIONS
        if self.counts.sessions_of(ip) >= self.max_per_ip:
            return TOO_MANY_FROM_YOU
        self.counts.add_session(ip, 1)
        return None

    def leave(self, ip: str) -> None:
        self.counts.add_session(ip, -1)

    def before_rcpt(self, ip: str, now: float) -> RcptPenalty:
        """Before any RCPT is looked up: a guesser waits, then is refused."""
        guesses = self.counts.unknown(ip, now)
        if guesses >= self.refuse_after:
            return RcptPenalty(0.0, True)
        over = guesses - self.tarpit_after + 1
        return RcptPenalty(min(30.0, self.tarpit_seconds * over) if over > 0 else 0.0, False)

    def unknown_rcpt(self, ip: str, now: float) -> None:
        """An RCPT named no live dropbox: it counts against its client for WINDOW."""
        self.counts.add_unknown(ip, now)
