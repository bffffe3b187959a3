"""SPF/DKIM/DMARC verdicts passed to crmdrop by real milters, as docs/mta.md describes:
SMTP → Postfix → OpenDKIM + OpenDMARC → LMTP → `crmdrop serve` with
`CRMDROP_SENDER_AUTH=upstream`. DNS (the DKIM key, SPF and DMARC records of the owner's
domain) is served by a test DNS server.

- the owner's message, DKIM-signed by the owner's domain, is filed and its delivery
  records the milters' verdict (`dmarc=pass`);
- a forged one (the owner's address in From:, no valid signature, sent from elsewhere)
  is refused at the end of DATA, while the forger is still connected: nothing is filed.
  With the recipe's `RejectFailures true` OpenDMARC refuses it itself; with it off (the
  `crmdrop-judges` run) Postfix accepts it, OpenDMARC writes `dmarc=fail` and crmdrop
  refuses it at LMTP by that verdict (`550 5.7.1`) — Postfix then bounces it, which is
  why the recipe lets OpenDMARC reject;
- a forger who writes `Authentication-Results: <our authserv-id>; dkim=pass; dmarc=pass`
  into the message gains nothing: OpenDKIM removes headers bearing our name, OpenDMARC
  judges from its own, and crmdrop reads only the topmost one (the milters').

The mail path stores nothing the LMTP test (test_postfix.py) does not already run on
both backends, so this runs on SQLite only."""

from __future__ import annotations

import base64
import smtplib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest

from tests.conftest import SERVER_ENV, OwnServer, own_server
from tests.integrations.dns_instance import DnsInstance
from tests.integrations.milters import Milters
from tests.integrations.postfix_instance import PostfixInstance
from tests.support import free_port, make_message, wait_for

AUTHSERV = "mx.test"
OWNER_DOMAIN = "mycorp.example"
SELECTOR = "mail"


@dataclass
class Stack:
    crm: OwnServer
    mx: PostfixInstance
    milters: Milters
    key: bytes  # the owner's domain's DKIM private key (PEM)

    def owner(self) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:10]
        return self.crm.cli.add_user(f"owner-{tag}@{OWNER_DOMAIN}", f"acct-{tag}")

    def send(self, mail_from: str, rcpt: str, raw: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", self.mx.port, timeout=60) as client:
            client.sendmail(mail_from, [rcpt], raw)

    def sign(self, raw: bytes) -> bytes:
        headers = [b"from", b"to", b"subject", b"date", b"message-id"]
        signature = dkim.sign(
            raw, SELECTOR.encode(), OWNER_DOMAIN.encode(), self.key, include_headers=headers
        )
        return signature + raw


def _keypair(tmp: Path) -> tuple[bytes, str]:
    """A throw-away RSA key: the PEM, and the public key as a DKIM `p=` value."""
    pem = tmp / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(pem), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(pem), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return pem.read_bytes(), base64.b64encode(der).decode()


@pytest.fixture(scope="module", params=["recipe", "crmdrop-judges"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("auth-results")
    key, public = _keypair(data_dir)
    records = {
        f"{SELECTOR}._domainkey.{OWNER_DOMAIN}.": f"v=DKIM1; k=rsa; p={public}",
        f"_dmarc.{OWNER_DOMAIN}.": "v=DMARC1; p=reject",
        f"{OWNER_DOMAIN}.": "v=spf1 ip4:192.0.2.10 -all",  # its own server, not the test's
    }
    env = {
        **SERVER_ENV,
        "CRMDROP_POSTFIX_POLICY_LISTEN": f"127.0.0.1:{free_port()}",
        "CRMDROP_SENDER_AUTH": "upstream",
        "CRMDROP_UPSTREAM_AUTHSERV": AUTHSERV,
    }
    reject = request.param == "recipe"
    with DnsInstance(records) as dns_, Milters(dns_.address, AUTHSERV, reject) as milters:
        for crm in own_server("sqlite", data_dir, env):
            block = crm.cli.run("mta", "postfix", "--lmtp", f"127.0.0.1:{crm.server.lmtp_port}")
            with PostfixInstance() as mx:
                mx.apply(block)
                mx.postconf("-e", f"smtpd_milters = {milters.sockets}")
                mx.postconf("-e", "non_smtpd_milters = $smtpd_milters")
                mx.postconf("-e", "milter_default_action = accept")
                mx.start()
                yield Stack(crm, mx, milters, key)


def _filed(stack: Stack, account: str) -> dict[str, Any] | None:
    data = stack.crm.cli.export(account)
    return data if data["notes"] else None


def test_a_signed_message_from_the_owner_is_filed_with_the_milters_verdict(stack: Stack) -> None:
    owner = stack.owner()
    msg = make_message(from_=owner["email"], to=["Pat Partner <pat@partner.example>"])
    stack.send(owner["email"], owner["dropbox"]["note"], stack.sign(msg.as_bytes()))

    data = wait_for(lambda: _filed(stack, owner["account"]), timeout=60, what="the note")
    assert data["notes"][0]["contacts"] == ["pat@partner.example"]
    assert data["deliveries"][0]["sender_auth"] == (
        f"dmarc=pass for {OWNER_DOMAIN} (from {AUTHSERV})"
    ), stack.milters.logs()


def _assert_refused(stack: Stack, owner: dict[str, Any], raw: bytes) -> None:
    """Refused at DATA: by OpenDMARC (the recipe) or by crmdrop at LMTP on OpenDMARC's
    `dmarc=fail` (when OpenDMARC only writes its verdict). Never filed either way."""
    sender = f"forger-{uuid.uuid4().hex[:8]}@elsewhere.example"
    if stack.milters.reject:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            stack.send(sender, owner["dropbox"]["note"], raw)
        assert refused.value.smtp_code == 550, refused.value
        assert refused.value.smtp_error == b"5.7.1 rejected by DMARC policy for " + (
            OWNER_DOMAIN.encode()
        )
    else:
        stack.send(sender, owner["dropbox"]["note"], raw)  # Postfix takes it (250) ...

        def refused_by_crmdrop() -> str | None:  # ... and crmdrop refuses it over LMTP
            lines = [ln for ln in stack.mx.log().splitlines() if "status=bounced" in ln]
            return next((ln for ln in lines if owner["dropbox"]["note"] in ln), None)

        line = wait_for(refused_by_crmdrop, timeout=60, what="crmdrop's LMTP refusal")
        assert " said: 550 5.7.1 " in line, line
        assert "dmarc=fail" in line or "DMARC" in line, line
    assert stack.crm.cli.export(owner["account"])["notes"] == []


def test_a_forged_message_in_the_owners_name_is_refused_at_data(stack: Stack) -> None:
    owner = stack.owner()
    unsigned = make_message(from_=owner["email"], to=["pat@partner.example"]).as_bytes()
    _assert_refused(stack, owner, unsigned)
    tampered = stack.sign(unsigned).replace(b"Hi there.", b"Pay this invoice.")
    _assert_refused(stack, owner, tampered)


def test_a_fake_authentication_results_header_does_not_help_the_forger(stack: Stack) -> None:
    owner = stack.owner()
    fake = (
        f"{AUTHSERV}; spf=pass smtp.mailfrom={OWNER_DOMAIN}; "
        f"dkim=pass header.d={OWNER_DOMAIN}; dmarc=pass header.from={OWNER_DOMAIN}"
    )
    raw = make_message(
        from_=owner["email"],
        to=["pat@partner.example"],
        headers={"Authentication-Results": fake},
    ).as_bytes()
    _assert_refused(stack, owner, raw)
