"""The web layer. For now a status page and a health endpoint; the full UI is later work."""

from __future__ import annotations

from html import escape

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from crmdrop.config import Settings
from crmdrop.store.db import Database
from crmdrop.store.deliveries import status_counts


def queue_counts(db: Database) -> dict[str, int]:
    with db.reading() as session:
        return status_counts(session)


def create_app(db: Database, settings: Settings) -> FastAPI:
    app = FastAPI(title="crmdrop", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"status": "up", "deliveries": queue_counts(db)}

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        counts = queue_counts(db)
        rows = "".join(
            f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(counts.items())
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'><title>crmdrop</title></head>"
            "<body><h1>crmdrop is up</h1>"
            f"<p>Dropbox domain: <code>{escape(settings.domain)}</code>. "
            f"SMTP on {escape(settings.smtp_listen)}, LMTP on {escape(settings.lmtp_listen)}.</p>"
            f"<table><tr><th>deliveries</th><th>count</th></tr>{rows}</table>"
            "</body></html>"
        )

    return app
