"""Hostile input over SMTP to a running server, on SQLite and PostgreSQL: our faults are
never the sender's, and what can be read is filed (issue #11)."""

from __future__ import annotations

import socket

from tests.conftest import Crm
from tests.support import smtp_send


class Dialogue:
    """A raw SMTP dialogue (bytes in, reply lines out) for what smtplib will not send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")
        assert self.reply().startswith("220")

    def reply(self) -> str:
        lines = []
        while True:
            line = self.reader.readline().decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def cmd(self, line: bytes) -> str:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def data(self, body: bytes) -> str:
        assert self.cmd(b"DATA").startswith("354")
        self.sock.sendall(body)
        return self.reply()

    def close(self) -> None:
        try:
            self.cmd(b"QUIT")
        finally:
            self.sock.close()


def test_a_body_in_the_idna_charset_is_filed_not_rejected_as_without_a_from(crm: Crm) -> None:
    owner = crm.new_owner()
    raw = (
        f"From: {owner.email}\r\nTo: jane@customer.example\r\nSubject: idna body\r\n"
        "Message-ID: <idna-body@test.example>\r\n"
        "Content-Type: text/plain; charset=idna\r\n\r\n"
    ).encode() + b"\xff jane@customer.example\r\n"
    smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], raw)
    data = crm.settled(owner.account)
    assert [d["status"] for d in data["deliveries"]] == ["filed"], data["deliveries"]
    assert [c["emails"] for c in data["contacts"]] == [["jane@customer.example"]]
    record = crm.cli.json("deliveries", "show", str(data["deliveries"][0]["id"]))
    assert any("charset" in d for d in record["plan"]["defects"])  # recovered, recorded


def test_an_encoded_word_in_an_undefined_charset_gets_a_250_and_is_filed(crm: Crm) -> None:
    owner = crm.new_owner()
    raw = (
        f"From: {owner.email}\r\nTo: jane@customer.example\r\nSubject: note\r\n"
        "X-Note: =?undefined?B?/w==?=\r\nMessage-ID: <undefined-word@test.example>\r\n\r\n"
        "Hello Jane.\r\n"
    ).encode()
    refused = smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], raw)
    assert refused == {}
    data = crm.settled(owner.account)
    assert [d["status"] for d in data["deliveries"]] == ["filed"], data["deliveries"]


def test_an_8bit_sender_address_that_is_no_utf8_is_refused_at_mail_and_the_session_goes_on(
    crm: Crm,
) -> None:
    owner = crm.new_owner()
    talk = Dialogue(crm.smtp)
    try:
        assert talk.cmd(b"EHLO fuzz.example").startswith("250")
        reply = talk.cmd(b"MAIL FROM:<\xff\xfe@x.org>")
        assert reply.startswith("501 5.1.7"), reply
        assert talk.cmd(f"MAIL FROM:<{owner.email}>".encode()).startswith("250")
        assert talk.cmd(f"RCPT TO:<{owner.dropbox['note']}>".encode()).startswith("250")
        body = (
            f"From: {owner.email}\r\nTo: jane@customer.example\r\nSubject: after\r\n\r\nhi\r\n.\r\n"
        )
        assert talk.data(body.encode()).startswith("250")
    finally:
        talk.close()
    data = crm.settled(owner.account)
    assert [d["status"] for d in data["deliveries"]] == ["filed"]


def test_one_dropbox_named_fifty_times_in_one_transaction_makes_one_delivery(crm: Crm) -> None:
    owner = crm.new_owner()
    box = owner.dropbox["note"]
    local, domain = box.split("@")
    spellings = [box, box.upper(), f"{local}+a@{domain}"] * 17  # 51, the limit is 5 dropboxes
    raw = (
        f"From: {owner.email}\r\nTo: jane@customer.example\r\nSubject: many\r\n"
        "Message-ID: <fifty-rcpts@test.example>\r\n\r\nhi\r\n"
    ).encode()
    refused = smtp_send(crm.smtp, owner.email, spellings, raw)
    assert refused == {}
    data = crm.settled(owner.account)
    assert len(data["deliveries"]) == 1
    assert len(data["notes"]) == 1
