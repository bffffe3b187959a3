"""`/webhooks`: the account's outbound webhook endpoints and their last attempts
(docs/webhooks.md). Registering and removing is for the account's admins."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from crmdrop.store import webhooks
from crmdrop.web.api.common import (
    CallerDep,
    IdPath,
    Page,
    admin_only,
    now,
    reading,
    settings_of,
    writing,
)

router = APIRouter(tags=["webhooks"])


class EndpointIn(BaseModel):
    url: str = Field(max_length=webhooks.MAX_URL, description="http(s) URL events are POSTed to")
    events: list[str] = Field(
        min_length=1, max_length=20, description="Event names: " + ", ".join(webhooks.Event)
    )


class Endpoint(BaseModel):
    id: int
    url: str
    events: list[str]
    enabled: bool
    failing_since: datetime | None
    disabled_at: datetime | None
    created_at: datetime


class Created(Endpoint):
    secret: str = Field(description="whsec_...: verifies the signatures; shown this once")


class EndpointDetail(Endpoint):
    last_attempts: list[webhooks.AttemptInfo]


def _out(e: webhooks.EndpointInfo) -> Endpoint:
    return Endpoint(
        id=e.id,
        url=e.url,
        events=e.events,
        enabled=e.enabled,
        failing_since=e.failing_since,
        disabled_at=e.disabled_at,
        created_at=e.created_at,
    )


@router.get("/webhooks", summary="The account's webhook endpoints")
def list_endpoints(request: Request, caller: CallerDep) -> Page[Endpoint]:
    with reading(request) as session:
        rows = webhooks.list_endpoints(session, caller.account_id)
    return Page[Endpoint](items=[_out(e) for e in rows])


@router.post("/webhooks", status_code=201, summary="Register an endpoint (admin)")
def add_endpoint(request: Request, caller: CallerDep, body: EndpointIn) -> Created:
    admin_only(caller)
    with writing(request) as session:
        endpoint, secret = webhooks.add_endpoint(
            session,
            caller.account_id,
            body.url,
            body.events,
            user_id=caller.user.id,
            now=now(),
            allow_private=settings_of(request).webhook_allow_private,
        )
        shown = _out(webhooks.endpoint_info(endpoint))
    return Created(**shown.model_dump(), secret=secret)


@router.get("/webhooks/{endpoint_id}", summary="An endpoint and its last 20 attempts")
def get_endpoint(request: Request, caller: CallerDep, endpoint_id: IdPath) -> EndpointDetail:
    with reading(request) as session:
        endpoint = webhooks.get_endpoint(session, endpoint_id, caller.account_id)
        attempts = webhooks.last_attempts(session, endpoint.id)
        shown = _out(webhooks.endpoint_info(endpoint))
    return EndpointDetail(**shown.model_dump(), last_attempts=attempts)


@router.delete("/webhooks/{endpoint_id}", status_code=204, summary="Remove an endpoint (admin)")
def remove_endpoint(request: Request, caller: CallerDep, endpoint_id: IdPath) -> Response:
    admin_only(caller)
    with writing(request) as session:
        webhooks.remove_endpoint(session, endpoint_id, caller.account_id)
    return Response(status_code=204)
