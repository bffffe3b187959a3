"""`/metrics` in the Prometheus text format (docs/metrics.md).

Counts come from the database at scrape time (`crmdrop.store.metrics` says why) plus the
SMTP refusals this process saw (`crmdrop.telemetry`). Who may read it is a setting:
`off` (404), `loopback` (clients on 127.0.0.1/::1 only) or `token` (Bearer metrics_token).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from ipaddress import ip_address

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from crmdrop.config import Settings
from crmdrop.store.db import Database
from crmdrop.store.metrics import Snapshot, snapshot
from crmdrop.store.status import DeliveryStatus
from crmdrop.telemetry import REFUSALS

log = logging.getLogger(__name__)

FILED = (DeliveryStatus.FILED, DeliveryStatus.DUPLICATE, DeliveryStatus.TASK_ONLY)


def _families(snap: Snapshot) -> Iterator[Metric]:
    statuses = snap.by_status
    accepted = sum(n for s, n in statuses.items() if s != DeliveryStatus.REJECTED)
    yield CounterMetricFamily(
        "crmdrop_messages_accepted", "Deliveries accepted (stored, then 250)", value=accepted
    )
    refused = CounterMetricFamily(
        "crmdrop_messages_refused", "Messages or recipients refused, by reason", labels=["reason"]
    )
    for reason, count in REFUSALS.snapshot().items():
        refused.add_metric([reason.value], count)
    refused.add_metric(["sender_not_allowed"], statuses.get(DeliveryStatus.REJECTED, 0))
    yield refused
    yield CounterMetricFamily(
        "crmdrop_messages_filed",
        "Deliveries filed (note, duplicate or task only)",
        value=sum(statuses.get(s, 0) for s in FILED),
    )
    yield CounterMetricFamily(
        "crmdrop_messages_failed",
        "Deliveries parked as failed",
        value=statuses.get(DeliveryStatus.FAILED, 0),
    )
    by_status = GaugeMetricFamily(
        "crmdrop_deliveries", "Deliveries by current status", labels=["status"]
    )
    for status, count in sorted(statuses.items()):
        by_status.add_metric([status], count)
    yield by_status
    yield GaugeMetricFamily(
        "crmdrop_queue_depth", "Deliveries queued", value=statuses.get(DeliveryStatus.QUEUED, 0)
    )
    yield GaugeMetricFamily(
        "crmdrop_queue_oldest_age_seconds",
        "Age of the oldest queued delivery (0: none)",
        value=snap.oldest_queued_seconds,
    )
    yield HistogramMetricFamily(
        "crmdrop_accept_to_filed_seconds",
        "From the 250 to the filing, per finished delivery",
        buckets=[(str(le), n) for le, n in snap.latency_buckets] + [("+Inf", snap.latency_count)],
        sum_value=snap.latency_sum,
    )
    yield GaugeMetricFamily(
        "crmdrop_outbox_backlog", "Replies waiting for the relay", value=snap.outbox_queued
    )
    yield GaugeMetricFamily(
        "crmdrop_webhook_backlog", "Webhook messages waiting to be sent", value=snap.webhooks_queued
    )


class DatabaseCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        with self.db.reading() as session:
            snap = snapshot(session, now=datetime.now(UTC))
        yield from _families(snap)


def _allowed(request: Request, settings: Settings) -> Response | None:
    """None when the caller may read the metrics, else the answer to give."""
    if settings.metrics == "loopback":
        host = request.client.host if request.client else ""
        try:
            if ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return Response("metrics are open to loopback clients only\n", status_code=403)
    sent = request.headers.get("authorization", "")
    expected = f"Bearer {settings.metrics_token}"
    if settings.metrics_token and hmac.compare_digest(sent.encode(), expected.encode()):
        return None
    return Response(
        "send Authorization: Bearer <metrics_token>\n",
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
    )


def metrics_router(db: Database, settings: Settings) -> APIRouter:
    """The `/metrics` route, or none at all when metrics are off (a plain 404)."""
    router = APIRouter()
    if settings.metrics == "off":
        return router
    if settings.metrics == "token" and not settings.metrics_token:
        log.error("metrics = token but no metrics_token is set: /metrics stays off")
        return router
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(db))

    @router.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        refused = _allowed(request, settings)
        if refused is not None:
            return refused
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
