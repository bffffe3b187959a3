"""Large messages (issue #12): long base64 runs are left in the raw message and decoded
in chunks, and what the parser reads is what the stdlib reads from the whole message."""

from __future__ import annotations

import base64
import email
import hashlib
import os
from email import policy
from email.message import EmailMessage, Message

from crmdrop.mail.parse import _SCAN, _count_any_case, parse_message


def _stdlib_files(raw: bytes) -> list[tuple[str, bytes]]:
    """(filename, decoded bytes) of every leaf with a filename, as the stdlib decodes it."""
    found = []
    for part in email.message_from_bytes(raw, policy=policy.compat32).walk():
        if isinstance(part, Message) and not part.is_multipart() and part.get_filename():
            data = part.get_payload(decode=True)
            found.append((str(part.get_filename()), data if isinstance(data, bytes) else b""))
    return found


def _big(**extra: bytes) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@b.example"
    msg["To"] = "c@d.example"
    msg["Subject"] = "big"
    msg.set_content("The contract is attached. Write to jane@client.example.\n")
    for name, data in extra.items():
        msg.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return msg


def test_a_large_attachment_is_decoded_in_chunks_to_the_stdlib_bytes() -> None:
    raw = _big(**{"c.pdf": os.urandom(1_500_000), "s.bin": b"small"}).as_bytes()
    parsed = parse_message(raw)
    assert parsed.failure is None and parsed.defects == []
    big, small = parsed.attachments
    assert big.source is not None and big.data == b""  # left in the raw message
    assert small.source is None
    files = dict(_stdlib_files(raw))
    assert big.size == len(files["c.pdf"])
    assert b"".join(big.chunks()) == files["c.pdf"] == big.content()
    assert small.content() == files["s.bin"]
    assert "jane@client.example" in parsed.text
    assert parsed.content_hash == hashlib.sha256(raw).hexdigest()


def test_a_large_base64_text_body_is_read_as_text() -> None:
    text = "Line of the body with jane@client.example in it.\n" * 40_000  # ≈ 2 MB
    msg = EmailMessage()
    msg["From"] = "a@b.example"
    msg["Subject"] = "long"
    msg.set_content(text, cte="base64")
    parsed = parse_message(msg.as_bytes())
    assert parsed.attachments == []
    assert parsed.text.strip() == text.strip()
    assert any(a.address == "jane@client.example" for a in parsed.addresses)


def test_broken_base64_is_decoded_the_stdlib_way() -> None:
    """Base64 that goes on after its padding: not streamed, the stdlib's repairs apply."""
    body = base64.encodebytes(os.urandom(600_000)) + b"QQ==\n" + base64.encodebytes(b"x" * 900_000)
    raw = (
        b"From: a@b.example\nMIME-Version: 1.0\n"
        b'Content-Type: application/octet-stream; name="odd.bin"\n'
        b"Content-Transfer-Encoding: base64\n\n" + body
    )
    (attachment,) = parse_message(raw).attachments
    assert attachment.source is None
    assert attachment.data == dict(_stdlib_files(raw))["odd.bin"]


def test_an_attachment_of_an_attached_message_is_streamed_too() -> None:
    inner = _big(**{"inner.pdf": os.urandom(1_200_000)})
    outer = _big()
    outer.add_attachment(inner)
    raw = outer.as_bytes()
    parsed = parse_message(raw)
    (attached,) = parsed.attached
    (file,) = attached.attachments
    assert file.source is not None
    assert file.content() == dict(_stdlib_files(raw))["inner.pdf"]
    again = parse_message(raw).attached[0]
    assert again.content_hash == attached.content_hash  # the same at every parse


def test_content_type_is_counted_in_any_case_once_wherever_a_slice_ends() -> None:
    """The nesting check counts "content-type:" a MiB at a time (no lowered copy of a
    25 MB message): a match across a slice's end is counted once, as in the whole."""
    needle = b"Content-TYPE:"
    for offset in range(-len(needle) - 1, 2):
        raw = b"x" * (_SCAN + offset) + needle + b"y" * _SCAN + needle.upper()
        assert _count_any_case(raw, b"content-type:") == raw.lower().count(b"content-type:") == 2
