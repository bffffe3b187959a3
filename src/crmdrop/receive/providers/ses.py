"""Amazon SES receipt rules with an SNS action (content inline): SNS posts a JSON
envelope whose `Message` is SES's notification, with the raw message in
`content`. The SNS signature is verified as AWS documents it: the string to sign
from the message's own fields, RSA with SHA1 (SignatureVersion 1) or SHA256 (2),
with the certificate fetched only from a URL on the configured allow-list, and
only the configured topics are taken.

A SubscriptionConfirmation is verified and logged, never visited: we make no
outbound request on a caller's say-so; the admin confirms it (docs/inbound.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from crmdrop.receive.providers import InboundMail, Notice, Provider, ProviderError, intake_key

log = logging.getLogger(__name__)

_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]


class CertificateCache:
    """Signing certificates by URL, fetched once each, and only from allowed URLs."""

    def __init__(self, allowed: list[str], fetch: Callable[[str], bytes] | None = None) -> None:
        self.allowed = [a for a in allowed if a]
        self._fetch = fetch or _download
        self._certs: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> x509.Certificate:
        if not any(url.startswith(prefix) for prefix in self.allowed):
            raise ProviderError(403, "SigningCertURL is not on the allow-list")
        with self._lock:
            cert = self._certs.get(url)
        if cert is None:
            try:
                cert = x509.load_pem_x509_certificate(self._fetch(url))
            except Exception as error:  # a fetch that fails is ours to retry
                log.warning("could not fetch the SNS signing certificate %s: %s", url, error)
                raise ProviderError(503, "could not fetch the signing certificate") from None
            with self._lock:
                self._certs[url] = cert
        return cert


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # the URL is allow-listed
        data: bytes = response.read(64 * 1024)
        return data


def _string_to_sign(doc: dict[str, Any]) -> bytes:
    names = _SIGNED_FIELDS.get(str(doc.get("Type")))
    if names is None:
        raise ProviderError(400, f"unknown SNS message type {doc.get('Type')!r}")
    lines: list[str] = []
    for name in names:
        value = doc.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise ProviderError(400, f"missing field {name!r}")
        lines += [name, value]
    return ("\n".join(lines) + "\n").encode("utf-8")


def verify(doc: dict[str, Any], certs: CertificateCache, topics: set[str]) -> None:
    """Raise ProviderError unless `doc` is signed by SNS for one of `topics`."""
    if doc.get("TopicArn") not in topics:
        raise ProviderError(403, "TopicArn is not one of CRMDROP_SES_TOPIC_ARNS")
    version = doc.get("SignatureVersion")
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(str(version))
    if algorithm is None:
        raise ProviderError(400, f"unsupported SignatureVersion {version!r}")
    signed = _string_to_sign(doc)
    url, signature = doc.get("SigningCertURL"), doc.get("Signature")
    if not isinstance(url, str) or not isinstance(signature, str):
        raise ProviderError(400, "missing field 'SigningCertURL' or 'Signature'")
    key = certs.get(url).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ProviderError(403, "the signing certificate has no RSA key")
    try:
        key.verify(
            base64.b64decode(signature, validate=True), signed, padding.PKCS1v15(), algorithm
        )
    except (binascii.Error, ValueError, InvalidSignature):
        raise ProviderError(401, "bad signature") from None


def load(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ProviderError(400, f"malformed JSON: {error}") from None
    if not isinstance(doc, dict):
        raise ProviderError(400, "the payload is not a JSON object")
    return doc


def parse(doc: dict[str, Any]) -> InboundMail | Notice:
    """The SES message in a verified SNS notification (or the notice of a confirmation)."""
    if doc.get("Type") != "Notification":
        log.warning(
            "SNS %s for %s: confirm it in the AWS console or visit %s",
            doc.get("Type"),
            doc.get("TopicArn"),
            doc.get("SubscribeURL"),
        )
        return Notice(f"{doc.get('Type')} received; an admin confirms it (see the log)")
    try:
        ses = json.loads(doc["Message"])
    except json.JSONDecodeError as error:
        raise ProviderError(400, f"Message is not JSON: {error}") from None
    if not isinstance(ses, dict) or ses.get("notificationType") != "Received":
        return Notice(f"ignored an SES notification of type {ses.get('notificationType')!r}")
    return _received(ses)


def _received(ses: dict[str, Any]) -> InboundMail:
    mail, receipt = ses.get("mail") or {}, ses.get("receipt") or {}
    content = ses.get("content")
    if not isinstance(content, str) or not content:
        raise ProviderError(400, "missing field 'content' (use an SNS action, content inline)")
    rcpts = receipt.get("recipients") or mail.get("destination")
    if not isinstance(rcpts, list) or not all(isinstance(r, str) for r in rcpts) or not rcpts:
        raise ProviderError(400, "missing field 'receipt.recipients'")
    encoding = str((receipt.get("action") or {}).get("encoding", "UTF8")).upper()
    try:
        raw = (
            base64.b64decode(content, validate=True)
            if encoding == "BASE64"
            else content.encode("utf-8", "surrogateescape")
        )
    except (binascii.Error, ValueError):
        raise ProviderError(400, "content is not valid base64") from None
    message_id = str(mail.get("messageId") or "")
    key = intake_key(Provider.SES, message_id, *rcpts) if message_id else None
    return InboundMail(str(mail.get("source") or ""), rcpts, raw, key=key)
