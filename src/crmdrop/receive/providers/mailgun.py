"""Mailgun routes that forward to a URL ending in `mime`: `body-mime` holds the raw
message, `recipient` and `sender` the envelope. Verified by Mailgun's documented
HMAC-SHA256 of `timestamp + token` with the webhook signing key; a timestamp out
of the freshness window is refused, and a token is good once (the caller checks
and stores it: `InboundMail.key`).
"""

from __future__ import annotations

import hashlib
import hmac

from crmdrop.receive.providers import (
    InboundMail,
    Provider,
    ProviderError,
    intake_key,
    required,
    text,
)


def verify(fields: dict[str, bytes], signing_key: str, *, now: float, max_age: float) -> None:
    """Raise ProviderError unless the signature is Mailgun's and fresh."""
    timestamp = text(required(fields, "timestamp"), "timestamp")
    token = text(required(fields, "token"), "token")
    signature = text(required(fields, "signature"), "signature")
    try:
        when = float(timestamp)
    except ValueError:
        raise ProviderError(400, "timestamp is not a number") from None
    expected = hmac.new(
        signing_key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, signature.strip().lower()):
        raise ProviderError(401, "bad signature")
    if abs(now - when) > max_age:
        raise ProviderError(401, f"stale timestamp: more than {max_age:g}s from our clock")


def parse(fields: dict[str, bytes]) -> InboundMail:
    """The message and its envelope; the token is the replay key."""
    raw = required(fields, "body-mime")
    rcpts = text(required(fields, "recipient"), "recipient").split(",")
    sender = text(fields.get("sender", b""), "sender")
    token = text(required(fields, "token"), "token")
    return InboundMail(sender, rcpts, raw, key=intake_key(Provider.MAILGUN, token))
