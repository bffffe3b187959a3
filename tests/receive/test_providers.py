"""Provider inbound webhooks end to end: real payloads, signed with test keys (an
HMAC key for Mailgun, an ECDSA key pair for SendGrid, basic auth for Postmark, an
RSA certificate served over HTTP for SNS), posted to a running `crmdrop serve` on
SQLite and PostgreSQL, and read back with `crmdrop export`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.conftest import SERVER_ENV, Crm, OwnServer, own_server
from tests.support import make_message, wait_for

MAILGUN_KEY = "key-mailgun-test-signing"
POSTMARK_AUTH = "postmark:s3cret"
SENDGRID_AUTH = "sendgrid:hunter2"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:crmdrop-inbound"
CERT_PATH = "/SimpleNotificationService-test.pem"


@dataclass
class Keys:
    sendgrid: ec.EllipticCurvePrivateKey
    sns: rsa.RSAPrivateKey
    cert_url: str


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    """Test keys, and the SNS certificate served over HTTP on loopback (its allow-listed URL)."""
    sns_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _certificate(sns_key)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == CERT_PATH
            self.send_response(200 if ok else 404)
            self.end_headers()
            if ok:
                self.wfile.write(pem)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}{CERT_PATH}"
        yield Keys(ec.generate_private_key(ec.SECP256R1()), sns_key, url)
    finally:
        httpd.shutdown()


@dataclass
class Site:
    own: OwnServer
    http: httpx.Client

    def owner(self) -> dict[str, Any]:
        tag = uuid.uuid4().hex[:10]
        return self.own.cli.add_user(f"owner-{tag}@mycorp.example", f"acct-{tag}")

    def deliveries(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.own.cli.export(owner["account"])["deliveries"]
        return result

    def filed(self, owner: dict[str, Any], message_id: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            data = self.own.cli.export(owner["account"])
            notes = [n for n in data["notes"] if n["message_id"] == message_id.strip("<>")]
            return notes[0] if notes else None

        note: dict[str, Any] = wait_for(check, what="the note to be filed")
        return note


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, keys: Keys
) -> Iterator[Site]:
    public = keys.sendgrid.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    env = {
        **SERVER_ENV,
        "CRMDROP_MAILGUN_SIGNING_KEY": MAILGUN_KEY,
        "CRMDROP_SENDGRID_VERIFICATION_KEY": base64.b64encode(public).decode(),
        "CRMDROP_SENDGRID_BASIC_AUTH": SENDGRID_AUTH,
        "CRMDROP_POSTMARK_BASIC_AUTH": POSTMARK_AUTH,
        "CRMDROP_SES_TOPIC_ARNS": TOPIC,
        "CRMDROP_SES_CERT_URLS": keys.cert_url.rsplit("/", 1)[0] + "/",
    }
    data_dir: Path = tmp_path_factory.mktemp(f"inbound-{request.param}")
    for own in own_server(request.param, data_dir, env):
        base = f"http://127.0.0.1:{own.server.http_port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            yield Site(own, client)


def _message(owner: dict[str, Any], **kw: Any) -> tuple[bytes, str]:
    msg = make_message(
        from_=owner["email"],
        to=["Carla Client <carla@client.example>"],
        subject=kw.pop("subject", "Through a provider"),
        **kw,
    )
    return msg.as_bytes(), str(msg["Message-ID"])


# --- Mailgun ---------------------------------------------------------------------------------


def mailgun_fields(raw: bytes, rcpt: str, **override: str) -> dict[str, Any]:
    timestamp = override.pop("timestamp", str(int(time.time())))
    token = override.pop("token", uuid.uuid4().hex + uuid.uuid4().hex)
    signature = hmac.new(
        MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    fields: dict[str, Any] = {
        "recipient": rcpt,
        "sender": "owner@mycorp.example",
        "timestamp": timestamp,
        "token": token,
        "signature": override.pop("signature", signature),
        "body-mime": raw,
    }
    fields.update(override)
    return {k: (None, v) for k, v in fields.items()}


def test_mailgun_a_signed_message_is_filed_and_its_token_is_good_once(site: Site) -> None:
    owner = site.owner()
    raw, message_id = _message(owner)
    fields = mailgun_fields(raw, owner["dropbox"]["note"])
    # the URL of a Mailgun route must end in "mime" for it to post the raw message
    first = site.http.post("/inbound/mailgun/mime", files=fields)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "accepted"
    assert site.filed(owner, message_id)["contacts"] == ["carla@client.example"]

    replay = site.http.post("/inbound/mailgun", files=fields)
    assert replay.status_code == 406
    assert "already used" in replay.json()["detail"]
    assert len(site.deliveries(owner)) == 1


def test_mailgun_bad_requests_are_refused_and_change_nothing(site: Site) -> None:
    owner = site.owner()
    raw, _ = _message(owner)
    rcpt = owner["dropbox"]["note"]
    cases = {
        "bad signature": (mailgun_fields(raw, rcpt, signature="0" * 64), 401, "bad signature"),
        "stale": (
            mailgun_fields(raw, rcpt, timestamp=str(int(time.time()) - 3600)),
            401,
            "stale timestamp",
        ),
        "missing": (
            {k: v for k, v in mailgun_fields(raw, rcpt).items() if k != "body-mime"},
            400,
            "missing field 'body-mime'",
        ),
    }
    for name, (fields, status, detail) in cases.items():
        answer = site.http.post("/inbound/mailgun", files=fields)
        assert answer.status_code == status, (name, answer.text)
        assert detail in answer.json()["detail"], name
    assert site.deliveries(owner) == []


def test_mailgun_an_unknown_dropbox_or_a_stranger_gets_406_which_stops_retries(
    site: Site,
) -> None:
    owner = site.owner()
    raw, _ = _message(owner)
    unknown = site.http.post(
        "/inbound/mailgun", files=mailgun_fields(raw, "dropbox-nosuchtoken0000@dropbox.test")
    )
    assert unknown.status_code == 406
    assert "550 5.1.1" in unknown.json()["detail"]
    stranger = make_message(from_="stranger@elsewhere.example", to=["x@client.example"])
    refused = site.http.post(
        "/inbound/mailgun", files=mailgun_fields(stranger.as_bytes(), owner["dropbox"]["note"])
    )
    assert refused.status_code == 406
    assert "550 5.7.1" in refused.json()["detail"]
    # as at SMTP's end of DATA, the refusal is recorded (without the message)
    assert [d["status"] for d in site.deliveries(owner)] == ["rejected"]


def test_an_oversized_payload_gets_413_and_changes_nothing(site: Site) -> None:
    owner = site.owner()
    big = b"x" * (2 * int(SERVER_ENV["CRMDROP_MAX_MESSAGE_SIZE"]) + 100_000)
    answer = site.http.post("/inbound/mailgun", files=mailgun_fields(big, owner["dropbox"]["note"]))
    assert answer.status_code == 413
    assert "size limit" in answer.json()["detail"]
    assert site.deliveries(owner) == []


# --- SendGrid --------------------------------------------------------------------------------


def sendgrid_post(
    site: Site, keys: Keys, fields: dict[str, Any], *, sign: bool = True, auth: str = SENDGRID_AUTH
) -> httpx.Response:
    request = site.http.build_request(
        "POST", "/inbound/sendgrid", files={k: (None, v) for k, v in fields.items()}
    )
    body = request.read()
    timestamp = str(int(time.time()))
    signed = keys.sendgrid.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "content-type": request.headers["content-type"],
        "authorization": "Basic " + base64.b64encode(auth.encode()).decode(),
        "x-twilio-email-event-webhook-timestamp": timestamp,
        "x-twilio-email-event-webhook-signature": base64.b64encode(
            signed if sign else b"\x30\x06\x02\x01\x01\x02\x01\x01"
        ).decode(),
    }
    return site.http.post("/inbound/sendgrid", content=body, headers=headers)


def test_sendgrid_a_signed_raw_message_is_filed(site: Site, keys: Keys) -> None:
    owner = site.owner()
    raw, message_id = _message(owner, body="Grüße, café.\n")
    envelope = json.dumps({"to": [owner["dropbox"]["case"]], "from": owner["email"]})
    answer = sendgrid_post(site, keys, {"email": raw, "envelope": envelope})
    assert answer.status_code == 200, answer.text
    assert site.filed(owner, message_id)["contacts"] == ["carla@client.example"]
    data = site.own.cli.export(owner["account"])
    assert [c["title"] for c in data["cases"]] == ["Through a provider"]


def test_sendgrid_bad_requests_are_refused_and_change_nothing(site: Site, keys: Keys) -> None:
    owner = site.owner()
    raw, _ = _message(owner)
    envelope = json.dumps({"to": [owner["dropbox"]["note"]], "from": owner["email"]})
    good = {"email": raw, "envelope": envelope}
    unsigned = sendgrid_post(site, keys, good, sign=False)
    assert (unsigned.status_code, unsigned.json()["detail"]) == (401, "bad signature")
    wrong_auth = sendgrid_post(site, keys, good, auth="sendgrid:wrong")
    assert wrong_auth.status_code == 401
    malformed = sendgrid_post(site, keys, {"email": raw, "envelope": "{not json"})
    assert malformed.status_code == 400 and "not JSON" in malformed.json()["detail"]
    missing = sendgrid_post(site, keys, {"envelope": envelope})
    assert missing.status_code == 400 and "'email'" in missing.json()["detail"]
    assert site.deliveries(owner) == []
    # SendGrid retries anything but a 2xx: a refusal is a 200 that says so
    unknown = {"email": raw, "envelope": json.dumps({"to": ["dropbox-nosuch0000@dropbox.test"]})}
    refused = sendgrid_post(site, keys, unknown)
    assert refused.status_code == 200 and refused.json()["status"] == "refused"


# --- Postmark --------------------------------------------------------------------------------


def postmark_post(site: Site, payload: Any, *, auth: str = POSTMARK_AUTH) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return site.http.post(
        "/inbound/postmark",
        content=body,
        headers={"content-type": "application/json"},
        auth=tuple(auth.split(":", 1)),  # type: ignore[arg-type]
    )


def test_postmark_a_message_is_filed_once_even_when_postmark_retries(site: Site) -> None:
    owner = site.owner()
    raw, message_id = _message(owner)
    payload = {
        "From": owner["email"],
        "OriginalRecipient": owner["dropbox"]["note"],
        "MessageID": str(uuid.uuid4()),
        "RawEmail": raw.decode(),
    }
    first = postmark_post(site, payload)
    assert first.status_code == 200 and first.json()["status"] == "accepted"
    again = postmark_post(site, payload)  # our 200 was lost: Postmark sends it again
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert site.filed(owner, message_id)["contacts"] == ["carla@client.example"]
    assert len(site.deliveries(owner)) == 1


def test_postmark_bad_requests_are_refused_and_change_nothing(site: Site) -> None:
    owner = site.owner()
    raw, _ = _message(owner)
    rcpt = owner["dropbox"]["note"]
    assert postmark_post(site, {"RawEmail": raw.decode()}, auth="postmark:no").status_code == 401
    malformed = postmark_post(site, b'{"RawEmail": ')
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["detail"]
    missing = postmark_post(site, {"OriginalRecipient": rcpt})
    assert missing.status_code == 400 and "RawEmail" in missing.json()["detail"]
    assert site.deliveries(owner) == []
    unknown = postmark_post(
        site, {"OriginalRecipient": "dropbox-nosuch0000@dropbox.test", "RawEmail": raw.decode()}
    )
    assert unknown.status_code == 403  # Postmark stops retrying on a 403


# --- Amazon SES through SNS ------------------------------------------------------------------


def sns_document(keys: Keys, fields: dict[str, str], *, topic: str = TOPIC) -> dict[str, str]:
    doc = {
        "MessageId": str(uuid.uuid4()),
        "TopicArn": topic,
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": "2",
        "SigningCertURL": keys.cert_url,
        **fields,
    }
    names = (
        ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        if doc["Type"] == "Notification"
        else ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    )
    signed = "".join(f"{n}\n{doc[n]}\n" for n in names if n in doc).encode()
    signature = keys.sns.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    doc["Signature"] = base64.b64encode(signature).decode()
    return doc


def ses_notification(keys: Keys, raw: bytes, rcpts: list[str], **kw: str) -> dict[str, str]:
    ses = {
        "notificationType": "Received",
        "mail": {"source": "owner@mycorp.example", "messageId": uuid.uuid4().hex},
        "receipt": {"recipients": rcpts, "action": {"type": "SNS", "encoding": "BASE64"}},
        "content": base64.b64encode(raw).decode(),
    }
    return sns_document(keys, {"Type": "Notification", "Message": json.dumps(ses)}, **kw)


def test_ses_a_signed_sns_notification_is_filed(site: Site, keys: Keys) -> None:
    owner = site.owner()
    raw, message_id = _message(owner)
    answer = site.http.post(
        "/inbound/ses", json=ses_notification(keys, raw, [owner["dropbox"]["note"]])
    )
    assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
    assert site.filed(owner, message_id)["contacts"] == ["carla@client.example"]


def test_ses_bad_requests_are_refused_and_change_nothing(site: Site, keys: Keys) -> None:
    owner = site.owner()
    raw, _ = _message(owner)
    rcpts = [owner["dropbox"]["note"]]
    tampered = ses_notification(keys, raw, rcpts)
    tampered["Message"] = tampered["Message"].replace("mycorp", "evil")
    assert site.http.post("/inbound/ses", json=tampered).status_code == 401
    other_topic = ses_notification(keys, raw, rcpts, topic=TOPIC + "-other")
    assert site.http.post("/inbound/ses", json=other_topic).status_code == 403
    foreign_cert = ses_notification(keys, raw, rcpts)
    foreign_cert["SigningCertURL"] = "https://attacker.example/cert.pem"
    assert site.http.post("/inbound/ses", json=foreign_cert).status_code == 403
    malformed = site.http.post(
        "/inbound/ses", content=b"{", headers={"content-type": "application/json"}
    )
    assert malformed.status_code == 400
    assert site.deliveries(owner) == []
    # a certificate we cannot fetch is our trouble, not the sender's: 5xx, SNS retries
    unreachable = ses_notification(keys, raw, rcpts)
    unreachable["SigningCertURL"] = keys.cert_url.replace(".pem", "-gone.pem")
    answer = site.http.post("/inbound/ses", json=unreachable)
    assert answer.status_code == 503 and "certificate" in answer.json()["detail"]
    assert site.deliveries(owner) == []


def test_ses_a_subscription_confirmation_is_verified_and_left_to_the_admin(
    site: Site, keys: Keys
) -> None:
    confirm = sns_document(
        keys,
        {
            "Type": "SubscriptionConfirmation",
            "Message": "You have chosen to subscribe to the topic.",
            "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
            "Token": "2336412f37fb687f5d51e6e2425dacbba",
        },
    )
    answer = site.http.post("/inbound/ses", json=confirm)
    assert answer.status_code == 200 and "admin confirms" in answer.json()["detail"]
    confirm["Token"] = "forged"
    assert site.http.post("/inbound/ses", json=confirm).status_code == 401


def test_an_endpoint_whose_key_is_not_set_answers_404(crm: Crm) -> None:
    """The session's servers (tests/conftest.py) are given no provider's key."""
    base = f"http://127.0.0.1:{crm.server.http_port}"
    for name in ("mailgun", "sendgrid", "postmark", "ses", "nosuch"):
        assert httpx.post(f"{base}/inbound/{name}", content=b"{}").status_code == 404
