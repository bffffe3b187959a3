"""Outlook's winmail.dat (TNEF): its body and attachments come out of the parse."""

from __future__ import annotations

import struct
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from crmdrop.mail.parse import parse_message

LVL_MESSAGE, LVL_ATTACHMENT = 1, 2
ATT_BODY, ATT_ATTACH_REND_DATA, ATT_ATTACH_TITLE, ATT_ATTACH_DATA = 0x800C, 0x9002, 0x8010, 0x800F


def _attr(level: int, name: int, kind: int, data: bytes) -> bytes:
    """One TNEF attribute: level, id, type, length, data, checksum (MS-OXTNEF 2.1.3.3)."""
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BHHI", level, name, kind, len(data)) + data + struct.pack("<H", checksum)


def _tnef(body: bytes, filename: bytes, payload: bytes) -> bytes:
    out = struct.pack("<IH", 0x223E9F78, 0x0001)
    out += _attr(LVL_MESSAGE, ATT_BODY, 0x0001, body)
    out += _attr(LVL_ATTACHMENT, ATT_ATTACH_REND_DATA, 0x0006, b"\x01\x00" + b"\x00" * 12)
    out += _attr(LVL_ATTACHMENT, ATT_ATTACH_TITLE, 0x0001, filename + b"\x00")
    out += _attr(LVL_ATTACHMENT, ATT_ATTACH_DATA, 0x0006, payload)
    return out


def _message_with(blob: bytes) -> bytes:
    outer = MIMEMultipart("mixed")
    outer["From"] = "Me <me@ourco.example>"
    outer["Subject"] = "FW: Angebot"
    outer.attach(MIMEText("See attached."))
    part = MIMEApplication(blob, "ms-tnef")
    part.add_header("Content-Disposition", "attachment", filename="winmail.dat")
    outer.attach(part)
    return outer.as_bytes()


def test_winmail_dat_body_and_attachments_are_unpacked() -> None:
    body = b"Hello from Outlook, write to kunde@client.example"
    parsed = parse_message(_message_with(_tnef(body, b"offer.pdf", b"%PDF-1.4 tnef")))
    assert "Hello from Outlook" in parsed.text
    assert [(a.filename, a.data) for a in parsed.attachments] == [("offer.pdf", b"%PDF-1.4 tnef")]
    assert "kunde@client.example" in {a.address for a in parsed.addresses}


def test_a_broken_winmail_dat_is_a_defect_and_kept_as_an_attachment() -> None:
    parsed = parse_message(_message_with(b"\x78\x9f\x3e\x22garbage"))
    assert any("TNEF" in d for d in parsed.defects)
    assert [a.filename for a in parsed.attachments] == ["winmail.dat"]
