"""SPF, DKIM and DMARC checked against DNS (SPEC §3.3, §7.2, `sender_auth = dns`), with a
real DNS server on loopback (tests/support.DnsServer) and a real DKIM signature."""

from __future__ import annotations

import base64
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.resolver
import pytest

from crmdrop.receive.authcheck import configure_resolver, dns_verdict
from tests.conftest import SERVER_ENV, own_server
from tests.support import (
    Cli,
    DnsServer,
    ServerProcess,
    make_message,
    smtp_send,
    wait_for,
)

KEY = (Path(__file__).parent / "fixtures" / "dkim-test-key.pem").read_bytes()  # test only


def public_key() -> str:
    der = subprocess.run(
        ["openssl", "rsa", "-pubout", "-outform", "DER"],
        input=KEY,
        capture_output=True,
        check=True,
    ).stdout
    return base64.b64encode(der).decode()


def records() -> dict[str, list[str]]:
    reject = ["v=DMARC1; p=reject"]
    return {
        "mycorp.example": ["v=spf1 ip4:192.0.2.1 -all"],  # loopback may not send for it
        "_dmarc.mycorp.example": reject,
        "okcorp.example": ["v=spf1 ip4:127.0.0.1 -all"],
        "_dmarc.okcorp.example": reject,
        "signed.example": ["v=spf1 ip4:192.0.2.1 -all"],
        "_dmarc.signed.example": reject,
        "test._domainkey.signed.example": [f"v=DKIM1; k=rsa; p={public_key()}"],
        "nodmarc.example": ["v=spf1 ip4:192.0.2.1 -all"],
    }


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(records(), silent={"slow.example", "_dmarc.slow.example"}) as server:
        yield server


@pytest.fixture
def resolver(dns_server: DnsServer) -> Iterator[None]:
    before = dns.resolver.default_resolver
    configure_resolver(dns_server.address, 1.0)
    yield
    dns.resolver.default_resolver = before


def mail(domain: str, body: str = "hello") -> bytes:
    return (
        f"From: Olive <olive@{domain}>\r\nTo: x@client.example\r\nSubject: s\r\n"
        f"Message-ID: <m@{domain}>\r\n\r\n{body}\r\n"
    ).encode()


def verdict(raw: bytes, domain: str) -> tuple[bool, str]:
    result = dns_verdict(
        raw,
        ip="127.0.0.1",
        helo="client.test",
        mail_from=f"olive@{domain}",
        author=f"olive@{domain}",
        authserv_id="crmdrop.test",
        timeout=1.0,
    )
    return result.failed, result.detail


def test_a_forged_author_of_a_dmarc_reject_domain_fails(resolver: None) -> None:
    assert verdict(mail("mycorp.example"), "mycorp.example") == (
        True,
        "dmarc=fail for mycorp.example (from crmdrop.test)",
    )


def test_aligned_spf_passes(resolver: None) -> None:
    assert verdict(mail("okcorp.example"), "okcorp.example")[1].startswith("dmarc=pass")


def test_a_valid_dkim_signature_passes_where_spf_fails(resolver: None) -> None:
    raw = mail("signed.example")
    signed = dkim.sign(raw, b"test", b"signed.example", KEY, include_headers=[b"from", b"subject"])
    assert verdict(signed + raw, "signed.example") == (
        False,
        "dmarc=pass for signed.example (from crmdrop.test)",
    )
    tampered = (signed + raw).replace(b"hello", b"HELLO")
    assert verdict(tampered, "signed.example")[0] is True


def test_without_dmarc_an_unsigned_message_failing_spf_is_not_a_definite_failure(
    resolver: None,
) -> None:
    """Unsigned is dkim=none, not fail: SPF *and* DKIM must both fail (SPEC §3.3)."""
    assert verdict(mail("nodmarc.example"), "nodmarc.example") == (
        False,
        "spf=fail dkim=none (from crmdrop.test)",
    )


def test_a_dns_timeout_is_a_temperror_and_never_held_against_the_message(
    resolver: None,
) -> None:
    failed, detail = verdict(mail("slow.example"), "slow.example")
    assert failed is False and "temperror" in detail


@pytest.fixture(params=["sqlite", "postgresql"])
def checking(
    request: pytest.FixtureRequest, tmp_path: Path, dns_server: DnsServer
) -> Iterator[tuple[ServerProcess, Cli]]:
    env = {
        **SERVER_ENV,
        "CRMDROP_SENDER_AUTH": "dns",
        "CRMDROP_DNS_RESOLVER": dns_server.address,
        "CRMDROP_DNS_TIMEOUT": "1",
    }
    for own in own_server(request.param, tmp_path, env):
        yield own.server, own.cli


def test_the_server_refuses_a_forged_owner_and_files_a_genuine_one(
    checking: tuple[ServerProcess, Cli],
) -> None:
    server, cli = checking
    victim = cli.add_user("olive@mycorp.example", "dnsauth")
    genuine = cli.add_user("otto@okcorp.example", "dnsauth")
    forged = make_message(from_=victim["email"], to=["target@client.example"])
    with pytest.raises(smtplib.SMTPDataError) as refused:
        smtp_send(server.smtp_port, victim["email"], [victim["dropbox"]["note"]], forged)
    assert refused.value.smtp_code == 550 and b"dmarc=fail" in refused.value.smtp_error
    real = make_message(from_=genuine["email"], to=["buyer@client.example"])
    smtp_send(server.smtp_port, genuine["email"], [genuine["dropbox"]["note"]], real)

    def settled() -> dict | None:
        data = cli.export("dnsauth")
        return data if any(d["status"] == "filed" for d in data["deliveries"]) else None

    data = wait_for(settled, what="the genuine message to be filed")
    verdicts = {d["author"]: (d["status"], d["sender_auth"]) for d in data["deliveries"]}
    assert verdicts == {  # recorded either way (SPEC §7.2)
        "olive@mycorp.example": (
            "rejected",
            "dmarc=fail for mycorp.example (from crmdrop.localhost)",
        ),
        "otto@okcorp.example": ("filed", "dmarc=pass for okcorp.example (from crmdrop.localhost)"),
    }
