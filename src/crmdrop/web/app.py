"""The web app's factory: middleware, static files, error pages, and each area's router.

Areas live in their own modules (auth, settings, admin, contacts, records, activity); every
router is mounted with the CSRF check (`common.check_csrf`) as a dependency, so no
state-changing request of a page can skip it.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from crmdrop.config import Settings
from crmdrop.store.accounts import StoreError
from crmdrop.store.db import Database
from crmdrop.store.deliveries import status_counts
from crmdrop.store.scope import NotFound as StoreNotFound
from crmdrop.web import activity, admin, auth, companies, contacts, records
from crmdrop.web import settings as settings_pages
from crmdrop.web.api import create_api
from crmdrop.web.common import (
    HERE,
    CsrfFailed,
    LoginRequired,
    NotFound,
    check_csrf,
    redirect,
    render,
)
from crmdrop.web.metrics import metrics_router

SESSION_COOKIE = "crmdrop_session"
SESSION_DAYS = 14
CSRF_MESSAGE = (
    "This form has expired or did not come from this page, so nothing was changed. "
    "Reload the page and try again."
)


def session_secret(settings: Settings) -> str:
    """`secret_key`, or a key generated once and kept in data_dir/secret_key (mode 600).

    Several `serve` processes behind one proxy must share it: set CRMDROP_SECRET_KEY.
    """
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.data_dir) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def _install_error_pages(app: FastAPI) -> None:
    async def login_required(request: Request, exc: Exception) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        url = f"/login?next={quote(target)}"
        if request.headers.get("HX-Request"):
            return Response(status_code=401, headers={"HX-Redirect": url})
        return redirect(url)

    async def csrf_failed(request: Request, exc: Exception) -> Response:
        await run_in_threadpool(auth.optional_user, request)
        return render(
            request, "error.html", status_code=403, title="Stale form", message=CSRF_MESSAGE
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StarletteHTTPException) and exc.status_code != 404:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        await run_in_threadpool(auth.optional_user, request)
        return render(
            request,
            "error.html",
            status_code=404,
            title="Not found",
            message="There is nothing here.",
        )

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(CsrfFailed, csrf_failed)
    app.add_exception_handler(NotFound, not_found)
    app.add_exception_handler(StoreNotFound, not_found)  # another account's object, too

    async def refused(request: Request, exc: Exception) -> Response:
        """A store refusal a page did not catch (a bad filter, a stale page link): 400."""
        await run_in_threadpool(auth.optional_user, request)
        return render(
            request, "error.html", status_code=400, title="Not possible", message=str(exc)
        )

    app.add_exception_handler(StoreError, refused)
    app.add_exception_handler(StarletteHTTPException, not_found)


def create_app(db: Database, settings: Settings) -> FastAPI:
    """The whole web app over one database."""
    app = FastAPI(title="crmdrop", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db = db
    app.state.settings = settings
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_DAYS * 24 * 3600,
        same_site="lax",
        https_only=(settings.public_url or "").startswith("https://"),
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_error_pages(app)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        with db.reading() as session:
            return {"status": "up", "deliveries": status_counts(session)}

    @app.get("/")
    def index(request: Request) -> Response:
        return redirect(auth.HOME if auth.optional_user(request) else "/login")

    pages = (contacts.router, companies.router, records.router, activity.router)
    for router in (auth.router, settings_pages.router, admin.router, *pages):
        app.include_router(router, dependencies=[Depends(check_csrf)])
    # Bearer tokens, not cookies: no CSRF there; problem+json errors of its own.
    app.mount("/api/v1", create_api(db, settings))
    app.include_router(metrics_router(db, settings))
    return app
