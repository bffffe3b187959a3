"""SendGrid Inbound Parse in raw mode: field `email` is the whole message and
`envelope` a JSON object `{"to": [...], "from": "..."}`. Verified by SendGrid's
signed-webhook scheme (ECDSA P-256 over `timestamp + body`, the public key from
the security policy) or by basic auth in the configured URL.
"""

from __future__ import annotations

import base64
import binascii
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from crmdrop.receive.providers import InboundMail, ProviderError, required, text

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"


def load_key(value: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER), or as PEM."""
    value = value.strip()
    key = (
        load_pem_public_key(value.encode())
        if value.startswith("-----BEGIN")
        else load_der_public_key(base64.b64decode(value))
    )
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid verification key is not an ECDSA public key")
    return key


def verify(
    key: ec.EllipticCurvePublicKey,
    headers: dict[str, str],
    body: bytes,
    *,
    now: float,
    max_age: float,
) -> None:
    """Raise ProviderError unless `body` carries SendGrid's fresh signature."""
    signature, timestamp = headers.get(SIGNATURE), headers.get(TIMESTAMP)
    if not signature or not timestamp:
        raise ProviderError(401, "missing signature headers")
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise ProviderError(401, "bad signature") from None
    try:
        when = float(timestamp)
    except ValueError:
        raise ProviderError(400, "timestamp is not a number") from None
    if abs(now - when) > max_age:
        raise ProviderError(401, f"stale timestamp: more than {max_age:g}s from our clock")


def parse(fields: dict[str, bytes]) -> InboundMail:
    raw = required(fields, "email")
    try:
        envelope = json.loads(text(required(fields, "envelope"), "envelope"))
    except json.JSONDecodeError as error:
        raise ProviderError(400, f"envelope is not JSON: {error}") from None
    if not isinstance(envelope, dict):
        raise ProviderError(400, "envelope is not a JSON object")
    to, sender = envelope.get("to"), envelope.get("from") or ""
    if not isinstance(to, list) or not to or not all(isinstance(a, str) for a in to):
        raise ProviderError(400, "envelope.to must be a list of addresses")
    if not isinstance(sender, str):
        raise ProviderError(400, "envelope.from must be a string")
    return InboundMail(sender, to, raw)
