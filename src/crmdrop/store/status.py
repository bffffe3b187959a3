"""The statuses stored in `deliveries.status` and `outbox.status`.

`StrEnum`s, so a member is the very string stored: rows written before these existed
read back equal to them, and SQL compares them as plain text.
"""

from __future__ import annotations

from enum import StrEnum

from crmdrop.dropbox.plan import Outcome


class DeliveryStatus(StrEnum):
    """queued → filed | duplicate | no_contact | task_only (the plan's outcome),
    rejected (the sender check refused it), or failed (parked after its attempts)."""

    QUEUED = "queued"
    FILED = "filed"
    DUPLICATE = "duplicate"
    NO_CONTACT = "no_contact"
    TASK_ONLY = "task_only"
    REJECTED = "rejected"
    FAILED = "failed"

    @classmethod
    def of(cls, outcome: Outcome) -> DeliveryStatus:
        """A decided plan's outcome is the delivery's final status."""
        return cls(outcome.value)


class ReplyStatus(StrEnum):
    """An outbox row: queued → sent | failed; suppressed (over the hourly limit) at once."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
