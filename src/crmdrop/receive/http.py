"""Provider inbound webhooks (`POST /inbound/<provider>`): the HTTP shell around
`receive/providers` and `receive/intake`, mounted on the serve process's web app.

The order is the same for each: endpoint configured (else 404) → body within the
size limit (else 413) → verified (else 401/403) → parsed (else 400) → queued
with the SMTP checks, and answered only after the commit. A refusal (unknown
dropbox, sender not allowed) gets the status that stops the provider's retries;
our own fault gets a 5xx so that the provider tries again (docs/inbound.md).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from python_multipart import parse_form
from python_multipart.multipart import Field, File

from crmdrop.receive.intake import Outcome, take
from crmdrop.receive.providers import (
    InboundMail,
    Notice,
    Provider,
    ProviderError,
    check_basic_auth,
    mailgun,
    postmark,
    sendgrid,
    ses,
)
from crmdrop.receive.service import Receiver

log = logging.getLogger(__name__)

# The status that tells each provider "refused, do not retry" (docs/inbound.md cites them).
REFUSED_STATUS = {
    Provider.MAILGUN: 406,  # Mailgun: 406 Not Acceptable is never retried
    Provider.SENDGRID: 200,  # SendGrid retries every non-2xx
    Provider.POSTMARK: 403,  # Postmark: 403 stops retries at once
    Provider.SES: 200,  # SNS retries server-side errors; a 2xx is certain to end it
}
# Room for the encoding around a raw message (base64 in JSON, form escaping).
ENVELOPE_SLACK = 64 * 1024


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"status": "error", "detail": detail}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProviderError(413, f"payload over the size limit ({limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProviderError(413, f"payload over the size limit ({limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _form(content_type: str, body: bytes) -> dict[str, bytes]:
    """The form fields as the bytes that were sent (the body is already size-checked).

    python-multipart directly rather than Starlette's `request.form()`: Starlette caps a
    part at 1 MiB and, worse for raw MIME, decodes a field that is not UTF-8 as Latin-1,
    so the original bytes of an 8-bit message could not be told apart afterwards.
    """
    fields: dict[str, bytes] = {}

    def on_field(field: Field) -> None:
        name = (field.field_name or b"").decode("utf-8", "replace")
        fields.setdefault(name, field.value or b"")

    def on_file(file: File) -> None:
        name = (file.field_name or b"").decode("utf-8", "replace")
        handle = file.file_object
        handle.seek(0)
        fields.setdefault(name, handle.read())
        file.close()

    headers = {"Content-Type": content_type.encode("latin-1", "replace")}
    try:
        parse_form(headers, io.BytesIO(body), on_field, on_file)
    except Exception as error:  # python-multipart raises several kinds on a bad body
        raise ProviderError(400, f"malformed form data: {error}") from None
    return fields


class InboundEndpoints:
    """The four endpoints over one Receiver; each method returns the HTTP answer."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.settings = receiver.settings
        self.limit = self.settings.max_message_size * 2 + ENVELOPE_SLACK
        key = self.settings.sendgrid_verification_key
        self.sendgrid_key = sendgrid.load_key(key) if key else None
        self.certs = ses.CertificateCache(self.settings.ses_cert_prefixes)

    async def queue(self, provider: Provider, mail: InboundMail) -> JSONResponse:
        """Queue `mail`; the answer is sent only after the commit."""
        result = await asyncio.to_thread(
            take,
            self.receiver,
            mail_from=mail.mail_from,
            rcpts=mail.rcpts,
            raw=mail.raw,
            protocol=provider.value,
            peer=provider.value,
            key=mail.key,
        )
        body: dict[str, Any] = {
            "status": result.outcome.value,
            "detail": result.detail,
            "deliveries": result.delivery_ids,
        }
        if result.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE):
            return JSONResponse(body, status_code=200)
        if result.outcome is Outcome.REFUSED:
            return JSONResponse(body, status_code=REFUSED_STATUS[provider])
        return JSONResponse(body, status_code=503)

    async def mailgun(self, request: Request) -> JSONResponse:
        signing_key = self.settings.mailgun_signing_key
        assert signing_key is not None
        body = await _read_body(request, self.limit)
        fields = _form(request.headers.get("content-type", ""), body)
        mailgun.verify(
            fields, signing_key, now=time.time(), max_age=self.settings.inbound_max_age_seconds
        )
        mail = mailgun.parse(fields)
        assert mail.key is not None
        if await asyncio.to_thread(self.receiver.intake_key_seen, mail.key):
            raise ProviderError(406, "replayed request: this token was already used")
        return await self.queue(Provider.MAILGUN, mail)

    async def sendgrid(self, request: Request) -> JSONResponse:
        if self.settings.sendgrid_basic_auth:
            check_basic_auth(
                self.settings.sendgrid_basic_auth, request.headers.get("authorization")
            )
        body = await _read_body(request, self.limit)
        if self.sendgrid_key is not None:
            headers = {k.lower(): v for k, v in request.headers.items()}
            sendgrid.verify(
                self.sendgrid_key,
                headers,
                body,
                now=time.time(),
                max_age=self.settings.inbound_max_age_seconds,
            )
        fields = _form(request.headers.get("content-type", ""), body)
        return await self.queue(Provider.SENDGRID, sendgrid.parse(fields))

    async def postmark(self, request: Request) -> JSONResponse:
        assert self.settings.postmark_basic_auth is not None
        check_basic_auth(self.settings.postmark_basic_auth, request.headers.get("authorization"))
        body = await _read_body(request, self.limit)
        return await self.queue(Provider.POSTMARK, postmark.parse(body))

    async def ses(self, request: Request) -> JSONResponse:
        doc = ses.load(await _read_body(request, self.limit))
        await asyncio.to_thread(ses.verify, doc, self.certs, self.settings.ses_topics)
        parsed = ses.parse(doc)
        if isinstance(parsed, Notice):
            return JSONResponse({"status": "ok", "detail": parsed.detail}, status_code=200)
        return await self.queue(Provider.SES, parsed)

    def enabled(self, provider: Provider) -> bool:
        s = self.settings
        return {
            Provider.MAILGUN: bool(s.mailgun_signing_key),
            Provider.SENDGRID: bool(s.sendgrid_verification_key or s.sendgrid_basic_auth),
            Provider.POSTMARK: bool(s.postmark_basic_auth),
            Provider.SES: bool(s.ses_topics and s.ses_cert_prefixes),
        }[provider]


def inbound_router(receiver: Receiver) -> APIRouter:
    """`POST /inbound/{mailgun,sendgrid,postmark,ses}`; unconfigured ones answer 404."""
    endpoints = InboundEndpoints(receiver)
    router = APIRouter(prefix="/inbound", include_in_schema=False)
    handlers: dict[Provider, Callable[[Request], Awaitable[JSONResponse]]] = {
        Provider.MAILGUN: endpoints.mailgun,
        Provider.SENDGRID: endpoints.sendgrid,
        Provider.POSTMARK: endpoints.postmark,
        Provider.SES: endpoints.ses,
    }

    @router.post("/{name}")
    @router.post("/{name}/mime")  # Mailgun posts the raw MIME only to a URL ending in "mime"
    async def inbound(name: str, request: Request) -> JSONResponse:
        provider = next((p for p in Provider if p.value == name), None)
        if provider is None or not endpoints.enabled(provider):
            return _error(404, "no such inbound endpoint here")
        try:
            return await handlers[provider](request)
        except ProviderError as error:
            log.info("%s webhook refused: %s %s", provider, error.status, error.detail)
            return _error(error.status, error.detail)
        except Exception:
            log.exception("%s webhook failed", provider)
            return _error(500, "temporary failure on our side, please try again")

    return router
