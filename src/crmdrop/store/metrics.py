"""What `/metrics` reports, read from the database at scrape time.

SMTP accepts happen in the `serve` process and filing in the worker process (or on other
hosts, on PostgreSQL): no one process sees both. The deliveries table does: it is the
queue and the processing record, so counting it is the truth, survives restarts and
needs no shared state between processes (prometheus-client's multiprocess mode would
need a shared directory on one host and loses nothing only while no process is replaced).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Float, case, cast, func, literal_column, select
from sqlalchemy.orm import Session

from crmdrop.store.models import Delivery, Outbox
from crmdrop.store.status import DeliveryStatus, ReplyStatus
from crmdrop.store.webhooks import backlog

# Accept-to-filed latency buckets, seconds (the queue normally drains in well under one).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
FINISHED = (
    DeliveryStatus.FILED,
    DeliveryStatus.DUPLICATE,
    DeliveryStatus.TASK_ONLY,
    DeliveryStatus.NO_CONTACT,
)


@dataclass(frozen=True)
class Snapshot:
    by_status: dict[str, int]  # deliveries per status
    oldest_queued_seconds: float  # 0 when nothing is queued
    latency_buckets: list[tuple[float, int]]  # (le, cumulative count), without +Inf
    latency_count: int
    latency_sum: float
    outbox_queued: int
    webhooks_queued: int


def _latency(session: Session) -> ColumnElement[float]:
    """finished_at - received_at in seconds, in the backend's own date arithmetic."""
    if session.get_bind().dialect.name == "sqlite":
        days = func.julianday(Delivery.finished_at) - func.julianday(Delivery.received_at)
        return cast(days * literal_column("86400.0"), Float)
    return cast(func.extract("epoch", Delivery.finished_at - Delivery.received_at), Float)


def _histogram(session: Session) -> tuple[list[tuple[float, int]], int, float]:
    latency = _latency(session)
    columns = [func.sum(case((latency <= le, 1), else_=0)) for le in BUCKETS]
    row = session.execute(
        select(*columns, func.count(), func.coalesce(func.sum(latency), 0.0)).where(
            Delivery.status.in_(FINISHED), Delivery.finished_at.is_not(None)
        )
    ).one()
    buckets = [(le, int(row[i] or 0)) for i, le in enumerate(BUCKETS)]
    return buckets, int(row[len(BUCKETS)] or 0), float(row[len(BUCKETS) + 1] or 0.0)


def snapshot(session: Session, *, now: datetime) -> Snapshot:
    by_status = {
        str(status): int(n)
        for status, n in session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        )
    }
    oldest = session.scalar(
        select(func.min(Delivery.received_at)).where(Delivery.status == DeliveryStatus.QUEUED)
    )
    if isinstance(oldest, str):  # SQLite hands an aggregate back as text
        oldest = datetime.fromisoformat(oldest).replace(tzinfo=now.tzinfo)
    age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    buckets, count, total = _histogram(session)
    outbox = session.scalar(select(func.count()).where(Outbox.status == ReplyStatus.QUEUED)) or 0
    return Snapshot(by_status, age, buckets, count, total, int(outbox), backlog(session))
