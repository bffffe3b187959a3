"""Postmark inbound webhooks: JSON with `RawEmail` (the "include raw email
content" option) and `OriginalRecipient`; authenticated by basic auth in the
webhook URL. Postmark's `MessageID` is the key: its retry of a message we
already queued is answered 200 without a second delivery.
"""

from __future__ import annotations

import json
from typing import Any

from crmdrop.receive.providers import InboundMail, Provider, ProviderError, intake_key


def _recipients(doc: dict[str, Any]) -> list[str]:
    original = doc.get("OriginalRecipient")
    if isinstance(original, str) and original.strip():
        return [original]
    found: list[str] = []
    for field in ("ToFull", "CcFull", "BccFull"):
        for entry in doc.get(field) or []:
            if isinstance(entry, dict) and isinstance(entry.get("Email"), str):
                found.append(entry["Email"])
    return found


def parse(body: bytes) -> InboundMail:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ProviderError(400, f"malformed JSON: {error}") from None
    if not isinstance(doc, dict):
        raise ProviderError(400, "the payload is not a JSON object")
    raw = doc.get("RawEmail")
    if not isinstance(raw, str) or not raw:
        raise ProviderError(400, "missing field 'RawEmail' (turn on raw email content)")
    rcpts = _recipients(doc)
    if not rcpts:
        raise ProviderError(400, "missing field 'OriginalRecipient'")
    sender = doc.get("From") if isinstance(doc.get("From"), str) else ""
    message_id = doc.get("MessageID")
    key = intake_key(Provider.POSTMARK, message_id, *rcpts) if isinstance(message_id, str) else None
    return InboundMail(sender or "", rcpts, raw.encode("utf-8", "surrogateescape"), key=key)
