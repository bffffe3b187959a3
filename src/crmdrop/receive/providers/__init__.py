"""Email providers' inbound webhooks: each module verifies a request the way its
provider documents and turns the payload into an `InboundMail` (raw MIME plus
envelope). Nothing here touches the database or HTTP: `receive/http.py` does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum


class Provider(StrEnum):
    MAILGUN = "mailgun"
    SENDGRID = "sendgrid"
    POSTMARK = "postmark"
    SES = "ses"


@dataclass(frozen=True)
class InboundMail:
    """A message as a provider hands it over. `key`: its identity at the provider
    (a Mailgun token, an SES message id), stored with the deliveries so a replay
    or a retry after a lost answer queues nothing twice."""

    mail_from: str
    rcpts: list[str]
    raw: bytes
    key: tuple[str, str] | None = None


@dataclass(frozen=True)
class Notice:
    """A verified request that carries no message (an SNS subscription confirmation)."""

    detail: str


class ProviderError(Exception):
    """A request we refuse before queueing anything: the HTTP status and why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def check_basic_auth(expected: str, authorization: str | None) -> None:
    """HTTP basic auth against `user:password`, in constant time (Postmark, SendGrid)."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise ProviderError(401, "basic authentication required")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ProviderError(401, "malformed basic authentication") from None
    if not hmac.compare_digest(given, expected.encode("utf-8")):
        raise ProviderError(401, "wrong user or password")


def required(fields: dict[str, bytes], name: str) -> bytes:
    """A form field that must be there (and not empty)."""
    value = fields.get(name)
    if not value:
        raise ProviderError(400, f"missing field {name!r}")
    return value


def text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProviderError(400, f"field {name!r} is not UTF-8") from None


def intake_key(provider: Provider, *parts: str) -> tuple[str, str]:
    """The (source, key) stored with the deliveries: a hash of the provider's identity."""
    digest = hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()
    return provider.value, digest
