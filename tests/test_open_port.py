"""The open port, with real clients against a running `crmdrop serve`: STARTTLS (a
self-signed certificate made here), SMTPUTF8 addresses end to end, and SMTP smuggling
(a bare LF or CR around the dot never ends a message) — issue #11."""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmdrop.cli import app
from tests.conftest import SERVER_ENV, Crm, OwnServer, own_server
from tests.support import wait_for


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OwnServer, Path]]:
    where = Path(tmp_path_factory.mktemp("tls"))
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    env = {**SERVER_ENV, "CRMDROP_TLS_CERT": str(cert), "CRMDROP_TLS_KEY": str(key)}
    for running in own_server("sqlite", where / "data", env):
        yield running, cert


def test_starttls_is_offered_once_configured_and_a_message_sent_over_it_is_filed(
    tls_server: tuple[OwnServer, Path],
) -> None:
    running, cert = tls_server
    owner = running.cli.add_user("tls-owner@mycorp.example", "tls")
    context = ssl.create_default_context(cafile=str(cert))
    raw = (
        b"From: tls-owner@mycorp.example\r\nTo: jane@customer.example\r\nSubject: secret\r\n"
        b"Message-ID: <over-tls@test.example>\r\n\r\nSent encrypted.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", running.server.smtp_port, timeout=30) as client:
        client.ehlo("tls.example")
        assert client.has_extn("starttls")
        code, _ = client.starttls(context=context)
        assert code == 220
        client.ehlo("tls.example")
        assert client.sock is not None and isinstance(client.sock, ssl.SSLSocket)
        assert client.sendmail(owner["email"], [owner["dropbox"]["note"]], raw) == {}

    def filed() -> bool:
        data = running.cli.export("tls")
        return bool(data["deliveries"]) and data["deliveries"][0]["status"] == "filed"

    wait_for(filed, what="the message sent over TLS to be filed")


def test_starttls_is_not_offered_without_a_certificate(crm: Crm) -> None:
    with smtplib.SMTP("127.0.0.1", crm.smtp, timeout=30) as client:
        client.ehlo("plain.example")
        assert not client.has_extn("starttls")
        assert client.has_extn("smtputf8")


def test_an_internationalized_user_and_contact_address_work_end_to_end(crm: Crm) -> None:
    account = f"idn-{crm.backend}"
    owner = crm.cli.add_user(f"jürgen-{crm.backend}@müller.example", account)
    raw = (
        f"From: Jürgen <{owner['email']}>\r\nTo: Zoë <zoë@bücher.example>\r\n"
        "Subject: Grüße\r\nMessage-ID: <utf8-{crm.backend}@müller.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nHallo Zoë!\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", crm.smtp, timeout=30) as client:
        refused = client.sendmail(
            owner["email"], [owner["dropbox"]["note"]], raw, mail_options=["SMTPUTF8"]
        )
    assert refused == {}
    data = crm.settled(account)
    assert [d["status"] for d in data["deliveries"]] == ["filed"], data["deliveries"]
    emails = [e for c in data["contacts"] for e in c["emails"]]
    assert len(emails) == 1 and emails[0].startswith("zoë@")
    assert [c["name"] for c in data["contacts"]] == ["Zoë"]


# Endings that some servers take for the end of DATA and others don't: the smuggler's
# second message hides behind them (CVE-2023-51766 and friends).
SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\n", b"\r.\n"]


@pytest.mark.parametrize("ending", SMUGGLING, ids=lambda e: e.hex())
def test_a_bare_lf_or_cr_around_the_dot_never_ends_a_message(crm: Crm, ending: bytes) -> None:
    owner = crm.new_owner()
    box = owner.dropbox["note"]
    smuggled = (
        b"MAIL FROM:<ceo@mycorp.example>\r\nRCPT TO:<" + box.encode() + b">\r\nDATA\r\n"
        b"From: ceo@mycorp.example\r\nSubject: smuggled\r\n\r\nPay now.\r\n"
    )
    body = (
        f"From: {owner.email}\r\nTo: jane@customer.example\r\nSubject: honest\r\n\r\n"
        "First part.\r\n"
    ).encode()
    payload = body + ending + smuggled
    with socket.create_connection(("127.0.0.1", crm.smtp), timeout=30) as sock:
        reader = sock.makefile("rb")

        def talk(line: bytes | None) -> bytes:
            if line is not None:
                sock.sendall(line)
            reply = reader.readline()
            while reply[3:4] == b"-":
                reply = reader.readline()
            return reply

        assert talk(None).startswith(b"220")
        assert talk(b"EHLO smuggler.example\r\n").startswith(b"250")
        assert talk(f"MAIL FROM:<{owner.email}>\r\n".encode()).startswith(b"250")
        assert talk(f"RCPT TO:<{box}>\r\n".encode()).startswith(b"250")
        assert talk(b"DATA\r\n").startswith(b"354")
        assert talk(payload + b"\r\n.\r\n").startswith(b"250")
        assert talk(b"QUIT\r\n").startswith(b"221")
    data = crm.settled(owner.account)
    assert len(data["deliveries"]) == 1, data["deliveries"]
    assert len(data["notes"]) == 1  # (its subject may be the smuggled block's: a forward)
    delivery_id = data["deliveries"][0]["id"]
    stored = crm.cli.runner.invoke(app, ["deliveries", "raw", str(delivery_id)], env=crm.cli.env)
    # One message, byte for byte — as SMTP transparency reads it: a CRLF-ended line that
    # starts with a dot loses that dot (RFC 5321 §4.5.2; we sent it unstuffed).
    lines = (payload + b"\r\n").split(b"\r\n")
    unstuffed = b"\r\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines)
    assert stored.stdout_bytes == unstuffed
