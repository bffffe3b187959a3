"""Counts that only the process that saw them knows: SMTP refusals that store nothing
(an unknown dropbox at RCPT, too many recipients, a message over the size limit).

Everything else `/metrics` shows is read from the database at scrape time (see
`crmdrop.store.metrics`); these live in the `serve` process, which also answers
`/metrics`, and start again from zero when it restarts, as Prometheus counters may.
"""

from __future__ import annotations

import threading
from enum import StrEnum


class Refusal(StrEnum):
    UNKNOWN_DROPBOX = "unknown_dropbox"
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    TOO_LARGE = "too_large"


class RefusalCounts:
    """A thread-safe count per reason (RCPT checks run in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(Refusal, 0)

    def add(self, reason: Refusal) -> None:
        with self._lock:
            self._counts[reason] += 1

    def snapshot(self) -> dict[Refusal, int]:
        with self._lock:
            return dict(self._counts)


REFUSALS = RefusalCounts()
