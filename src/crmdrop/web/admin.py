"""Admin pages: the account's users (invite, deactivate, make admin) and the service status."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from crmdrop.store.inbound import queue_counts
from crmdrop.web.auth import AdminUser
from crmdrop.web.common import database, render, settings_of

router = APIRouter(prefix="/admin")


@router.get("/status")
def status(request: Request, user: AdminUser) -> Response:
    """What `/` showed before there was a UI: the queue by status and where we listen."""
    with database(request).reading() as session:
        counts = queue_counts(session)
    return render(
        request, "admin/status.html", counts=sorted(counts.items()), settings=settings_of(request)
    )
