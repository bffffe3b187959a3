"""The REST API (`/api/v1`, docs/api.md): a FastAPI app of its own, mounted in the web
app, so its errors are problem details (RFC 9457) while the pages keep their HTML ones,
and it has its own OpenAPI document (`/api/v1/openapi.json`) and docs page.

Auth is a personal API token (`Authorization: Bearer`), never the session cookie, so there
is no CSRF to guard against here. Each token is rate-limited on its own.
"""

from __future__ import annotations

import logging
import math
import time
from html import escape
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmdrop.config import Settings
from crmdrop.store.accounts import StoreError
from crmdrop.store.db import Database
from crmdrop.store.scope import NotFound
from crmdrop.web.api import (
    addresses,
    contacts,
    deliveries,
    exclusions,
    me,
    notes,
    records,
    tasks,
    webhooks,
)
from crmdrop.web.api.common import PROBLEM_JSON, ApiError, Caller, CallerDep, Problem

log = logging.getLogger(__name__)

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": TITLES[code]}
    for code in (401, 404, 413, 422, 429)
}


def problem(
    status: int,
    detail: str,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body = Problem(title=TITLES.get(status, "Error"), status=status, detail=detail, errors=errors)
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_JSON,
    )


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    return f"{where}: {first.get('msg', 'invalid')}" + (
        f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    )


def _install_errors(api: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return problem(exc.status, exc.detail, exc.headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return problem(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return problem(422, _validation_detail(errors), errors=jsonable_encoder(errors))

    async def store_error(request: Request, exc: Exception) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound | LookupError) else 422
        return problem(status, str(exc).strip("'\""))

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("API %s %s failed", request.method, request.url.path)
        return problem(500, "an error on our side; nothing was changed")

    api.add_exception_handler(ApiError, api_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(RequestValidationError, invalid)
    api.add_exception_handler(StoreError, store_error)
    api.add_exception_handler(LookupError, store_error)
    api.add_exception_handler(Exception, crashed)


class BodyLimit:
    """Refuse a request body over `limit` bytes with 413, before any of it is parsed
    (a declared Content-Length at once; a chunked body as soon as it passes the limit)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, f"the request body is over {self.limit} bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, f"the request body is over {self.limit} bytes")
        await response(scope, receive, send)


class RateLimit:
    """A moving window per token, in this process's memory (one web process serves)."""

    def __init__(self, settings: Settings) -> None:
        self.item = parse(settings.api_rate_limit)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def __call__(self, caller: CallerDep) -> Caller:
        key = str(caller.token_id)
        if not self.limiter.hit(self.item, key):
            reset = self.limiter.get_window_stats(self.item, key).reset_time
            wait = max(1, math.ceil(reset - time.time()))
            raise ApiError(
                429,
                f"this token's rate limit ({self.item}) is used up; try again in {wait} s",
                {"Retry-After": str(wait)},
            )
        return caller


def _docs_page(api: FastAPI) -> str:
    """A plain HTML page of the endpoints, built from the OpenAPI document (no CDN)."""
    spec = api.openapi()
    rows = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            note = (op.get("description") or "").split("\n")[0]
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>/api/v1{escape(path)}"
                f"</code></td><td>{escape(op.get('summary', ''))}</td>"
                f"<td>{escape(note)}</td></tr>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>crmdrop API</title></head>"
        "<body><h1>crmdrop API v1</h1><p>Send <code>Authorization: Bearer &lt;token&gt;</code>"
        " (<code>crmdrop tokens create</code>). Errors are <code>application/problem+json"
        "</code>. The machine-readable description: <a href='/api/v1/openapi.json'>"
        "openapi.json</a>.</p><table><tr><th>method</th><th>path</th><th>what</th>"
        f"<th>notes</th></tr>{''.join(rows)}</table></body></html>"
    )


def create_api(db: Database, settings: Settings) -> ASGIApp:
    """The API app, to be mounted at /api/v1."""
    api = FastAPI(
        title="crmdrop API",
        version="1",
        description="The CRM email dropbox over HTTP. See docs/api.md.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        servers=[{"url": "/api/v1"}],
    )
    api.state.db = db
    api.state.settings = settings
    _install_errors(api)
    limited = [Depends(RateLimit(settings))]
    for module in (me, addresses, exclusions, contacts, notes, records, tasks, deliveries):
        api.include_router(module.router, dependencies=limited, responses=ERRORS)
    api.include_router(webhooks.router, dependencies=limited, responses=ERRORS)

    @api.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> str:
        return _docs_page(api)

    return BodyLimit(api, settings.api_max_body_bytes)
