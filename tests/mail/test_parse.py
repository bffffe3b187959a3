"""parse_message: headers, bodies, attachments, attached messages, addresses, bad input."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from crmdrop.mail.model import Mailbox
from crmdrop.mail.parse import parse_message


def _simple(body: str, **headers: str) -> bytes:
    msg = EmailMessage()
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    msg.set_content(body)
    return msg.as_bytes()


def test_it_decodes_headers_and_ids() -> None:
    raw = (
        b"From: =?iso-8859-1?q?Fran=E7ois_Dupont?= <F.Dupont@Example.FR>\n"
        b'To: Jane <jane@x.com>\nCc: a@b.com, "Smith, Ann" <ann@c.com>\n'
        b"Sender: bot@list.org\nResent-From: fw@x.com\n"
        b"Subject: =?utf-8?q?R=C3=A9union?=\nMessage-ID: <id-1@x.com>\n"
        b"In-Reply-To: <id-0@x.com>\nReferences: <a@x.com> <b@x.com>\n"
        b"Date: Tue, 02 Jan 2024 10:00:00 +0100\n\nhello\n"
    )
    p = parse_message(raw)
    assert p.from_ == [Mailbox("François Dupont", "f.dupont@example.fr")]
    assert p.cc == [Mailbox("", "a@b.com"), Mailbox("Smith, Ann", "ann@c.com")]
    assert p.sender == [Mailbox("", "bot@list.org")]
    assert p.subject == "Réunion"
    assert p.message_id == "id-1@x.com"
    assert p.in_reply_to == ["id-0@x.com"]
    assert p.references == ["a@x.com", "b@x.com"]
    assert p.date is not None and p.date.utcoffset() is not None
    assert p.content_hash == hashlib.sha256(raw).hexdigest()
    wheres = {(a.address, a.where) for a in p.addresses}
    assert ("fw@x.com", "header:resent-from") in wheres
    assert ("f.dupont@example.fr", "header:from") in wheres
    assert p.header("SUBJECT") == "Réunion"


def test_empty_message_id_is_none() -> None:
    p = parse_message(b"Message-ID: <>\nFrom: a@b.com\n\nx")
    assert p.message_id is None


def test_it_never_raises_on_junk() -> None:
    samples = [
        b"",
        b"\x00\x01\x02\xff" * 100,
        b"Content-Type: multipart/mixed; boundary=x\n\n--x\n"
        b"Content-Type: text/plain; charset=nope\n\n\xff\xfe",
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n!!!!",
        b"From: <<<>>>\nTo: ,,,;;;\nDate: yesterday\n\nbody",
        b"Content-Type: message/rfc822\n\n",
        b'Subject: truncated\nContent-Type: multipart/alternative; boundary="b"\n\n'
        b"--b\nContent-Type: text/html\n\n<p>hi",
    ]
    for raw in samples:
        p = parse_message(raw)
        assert p.content_hash == hashlib.sha256(raw).hexdigest()


def test_unknown_charset_is_a_defect_not_an_error() -> None:
    raw = b"Content-Type: text/plain; charset=x-klingon\n\nqapla\xe9 jane@x.com"
    p = parse_message(raw)
    assert "qapla" in p.text
    assert any("charset" in d for d in p.defects)
    assert [a.address for a in p.addresses] == ["jane@x.com"]


def test_plain_and_html_alternative_uses_plain_and_still_reads_mailto() -> None:
    outer = MIMEMultipart("alternative")
    outer["From"] = "a@x.com"
    outer.attach(MIMEText("Plain words here.", "plain"))
    outer.attach(
        MIMEText('<p>HTML words <a href="mailto:Lead@Client.com">Lead Person</a></p>', "html")
    )
    p = parse_message(outer.as_bytes())
    assert p.text == "Plain words here."
    assert p.html is not None and "HTML words" in p.html
    found = {(a.address, a.name, a.where) for a in p.addresses}
    assert ("lead@client.com", "Lead Person", "body:html") in found


def test_html_only_mail_is_turned_into_text() -> None:
    msg = MIMEText(
        "<html><body><p>Hello <b>there</b></p><p>Call me: bob@client.com</p></body></html>",
        "html",
    )
    p = parse_message(msg.as_bytes())
    assert "Hello there" in p.text
    assert ("bob@client.com", "body:html") in {(a.address, a.where) for a in p.addresses}


def test_attachments_keep_filename_type_bytes_and_content_id() -> None:
    outer = MIMEMultipart("mixed")
    outer.attach(MIMEText("see attached"))
    pdf = MIMEApplication(b"%PDF-1.4 data", "pdf")
    pdf.add_header("Content-Disposition", "attachment", filename=("utf-8", "", "Angebot März.pdf"))
    outer.attach(pdf)
    img = MIMEApplication(b"\x89PNG", "octet-stream")
    img.replace_header("Content-Type", "image/png")
    img.add_header("Content-ID", "<image001.png@01D2A3B4.C5D6E7F0>")
    img.add_header("Content-Disposition", "inline", filename="image001.png")
    outer.attach(img)
    p = parse_message(outer.as_bytes())
    assert [(a.filename, a.content_type, a.data) for a in p.attachments] == [
        ("Angebot März.pdf", "application/pdf", b"%PDF-1.4 data"),
        ("image001.png", "image/png", b"\x89PNG"),
    ]
    assert p.attachments[1].content_id == "image001.png@01D2A3B4.C5D6E7F0"
    assert not any("01d2a3b4" in a.address for a in p.addresses)


def test_attached_messages_are_parsed_recursively_with_their_addresses() -> None:
    innermost = MIMEText("deepest words")
    innermost["From"] = "Deep Author <deep@client.com>"
    innermost["Subject"] = "deep"
    inner = MIMEMultipart("mixed")
    inner["From"] = "Customer <cust@client.com>"
    inner["To"] = "sales@us.com"
    inner["Subject"] = "Order"
    inner.attach(MIMEText("I want to order."))
    inner.attach(MIMEMessage(innermost))
    outer = MIMEMultipart("mixed")
    outer["From"] = "me@us.com"
    outer["Subject"] = "Fwd: Order"
    outer.attach(MIMEText("FYI"))
    outer.attach(MIMEMessage(inner))
    p = parse_message(outer.as_bytes())
    assert len(p.attached) == 1
    sub = p.attached[0]
    assert sub.from_ == [Mailbox("Customer", "cust@client.com")]
    assert sub.text == "I want to order."
    assert sub.attached[0].from_ == [Mailbox("Deep Author", "deep@client.com")]
    found = {(a.address, a.where) for a in p.addresses}
    assert ("cust@client.com", "attached[1]:header:from") in found
    assert ("deep@client.com", "attached[1]:attached[1]:header:from") in found


def test_inline_forward_gives_author_and_own_text() -> None:
    body = (
        "Please add this lead.\n\n-- \nMe\n\n"
        "---------- Forwarded message ---------\n"
        "From: Lead Person <lead@client.com>\n"
        "Date: Fri, Apr 26, 2013 at 8:13 PM\n"
        "Subject: Pricing\n"
        "To: sales@us.com\n\n"
        "What does it cost?\n"
    )
    p = parse_message(_simple(body, From="me@us.com", Subject="Fwd: Pricing"))
    assert p.own_text == "Please add this lead."
    [block] = p.forwarded
    assert block.kind == "forward"
    assert block.from_ == Mailbox("Lead Person", "lead@client.com")
    assert block.subject == "Pricing"
    assert block.body == "What does it cost?"
    assert block.date is not None and (block.date.year, block.date.hour) == (2013, 20)
    assert ("lead@client.com", "forwarded[1]:from") in {(a.address, a.where) for a in p.addresses}
