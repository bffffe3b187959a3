"""Outlook's ``winmail.dat`` (TNEF): the body and attachments it hides, via tnefparse."""

from __future__ import annotations

from dataclasses import dataclass, field

from crmdrop.mail.encoding import decode_bytes
from crmdrop.mail.model import Attachment

__all__ = ["TnefContent", "is_tnef", "read_tnef"]

_SIGNATURE = b"\x78\x9f\x3e\x22"


@dataclass
class TnefContent:
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


def is_tnef(content_type: str, filename: str | None, data: bytes) -> bool:
    if content_type in ("application/ms-tnef", "application/vnd.ms-tnef"):
        return True
    return (filename or "").lower() == "winmail.dat" and data[:4] == _SIGNATURE


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return decode_bytes(value.rstrip(b"\x00"))[0]
    if isinstance(value, str):
        return value.rstrip("\x00")
    return None


def read_tnef(data: bytes) -> TnefContent:
    """Unpack a TNEF blob; a broken one yields a defect, never an exception."""
    out = TnefContent()
    try:
        from tnefparse import TNEF

        tnef = TNEF(data, do_checksum=False)
    except Exception as exc:  # tnefparse raises bare ValueError/struct errors on junk
        out.defects.append(f"unreadable TNEF: {exc.__class__.__name__}")
        return out
    out.text = _as_text(getattr(tnef, "body", None))
    out.html = _as_text(getattr(tnef, "htmlbody", None))
    for att in getattr(tnef, "attachments", []):
        try:
            name = att.long_filename() or att.name
        except Exception:
            name = ""
        payload = att.data if isinstance(att.data, bytes) else b""
        out.attachments.append(
            Attachment(
                filename=name or "attachment", content_type="application/octet-stream", data=payload
            )
        )
    return out
