"""The pipeline end to end: SMTP/LMTP to a running `crmdrop serve`, results read back
through `crmdrop export` — on SQLite and on PostgreSQL (the `crm` fixture)."""

from __future__ import annotations

import email
import smtplib
import socket
from email.message import EmailMessage

import httpx
import pytest

from crmdrop.cli import app
from tests.conftest import Crm, Owner
from tests.support import lmtp_session, make_message, smtp_send, wait_for


def send(crm: Crm, owner: Owner, msg: EmailMessage, *, rcpt: str | None = None) -> None:
    """Send as the owner's mail client would; the dropbox as an envelope recipient."""
    smtp_send(crm.smtp, owner.email, [rcpt or owner.dropbox["note"]], msg)


def note_for(data: dict, message_id: str) -> dict:
    notes = [n for n in data["notes"] if n["message_id"] == message_id.strip("<>")]
    assert len(notes) == 1, notes
    return notes[0]


def test_a_cc_to_the_dropbox_files_a_note_under_the_recipient(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(
        from_=f"Olive Owner <{owner.email}>",
        to=['"Jane Doe" <Jane.Doe@Customer.example>'],
        cc=[owner.dropbox["note"]],
        subject="Our proposal",
        body="Hi Jane,\n\nthe proposal is attached.\n",
        attachments=[("proposal.pdf", b"%PDF-1.4 fake")],
    )
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    note = note_for(data, msg["Message-ID"])
    assert note["contacts"] == ["jane.doe@customer.example"]
    assert note["direction"] == "from_user"
    assert note["subject"] == "Our proposal"
    assert note["attachments"] == ["proposal.pdf"]
    assert note["author_email"] == owner.email
    assert data["contacts"][0]["name"] == "Jane Doe"
    assert data["deliveries"][0]["status"] == "filed"


def test_a_bcc_files_the_note_though_the_dropbox_is_in_no_header(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(from_=owner.email, to=["sam.smith@client.example"], subject="BCC'd")
    assert owner.dropbox["note"] not in msg.as_string()
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert note_for(data, msg["Message-ID"])["contacts"] == ["sam.smith@client.example"]
    assert data["contacts"][0]["name"] == "Sam Smith"


def test_a_forward_is_filed_under_the_original_author_not_the_forwarder(crm: Crm) -> None:
    owner = crm.new_owner()
    body = (
        "FYI, see below.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Bob Buyer <bob@buyer.example>\n"
        "Date: Mon, Nov 16, 2026 at 10:00 AM\n"
        "Subject: Question about pricing\n"
        f"To: Olive Owner <{owner.email}>\n\n"
        "How much is the enterprise plan?\n"
    )
    msg = make_message(
        from_=owner.email,
        to=[owner.dropbox["note"]],
        subject="Fwd: Question about pricing",
        body=body,
    )
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    note = note_for(data, msg["Message-ID"])
    assert note["contacts"] == ["bob@buyer.example"]
    assert note["author_email"] == "bob@buyer.example"
    assert note["author"] == "Bob Buyer"
    assert note["direction"] == "to_user"
    assert note["is_forward"] is True
    assert note["subject"] == "Question about pricing"
    assert "enterprise plan" in note["body"]
    assert [c["emails"] for c in data["contacts"]] == [["bob@buyer.example"]]


def test_a_reply_all_from_a_contact_is_accepted_and_filed(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(
        from_="Carla Contact <carla@partner.example>",
        to=[owner.email],
        cc=[owner.dropbox["note"]],
        subject="Re: Meeting",
    )
    smtp_send(crm.smtp, "carla@partner.example", [owner.dropbox["note"]], msg)
    data = crm.settled(owner.account)
    note = note_for(data, msg["Message-ID"])
    assert note["contacts"] == ["carla@partner.example"]
    assert note["direction"] == "to_user"


def test_an_unknown_dropbox_is_refused_at_rcpt_with_550_5_1_1(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(from_=owner.email, to=["x@client.example"])
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        smtp_send(crm.smtp, owner.email, ["dropbox-doesnotexist0000@dropbox.test"], msg)
    code, text = refused.value.recipients["dropbox-doesnotexist0000@dropbox.test"]
    assert (code, text[:5]) == (550, b"5.1.1")


def test_an_unrecognised_author_is_refused_at_end_of_data_and_recorded(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(from_="mallory@spam.example", to=["victim@client.example"])
    with pytest.raises(smtplib.SMTPDataError) as refused:
        smtp_send(crm.smtp, "mallory@spam.example", [owner.dropbox["note"]], msg)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 ")
    data = crm.export(owner.account)
    assert data["notes"] == [] and data["contacts"] == []
    assert [d["status"] for d in data["deliveries"]] == ["rejected"]
    assert "mallory@spam.example" in data["deliveries"][0]["reason"]


def test_no_contact_sends_an_error_reply_through_the_relay(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(
        from_=owner.email, to=[owner.dropbox["note"]], subject="Notes to self", body="No address."
    )
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert data["notes"] == []
    assert data["deliveries"][0]["status"] == "no_contact"
    replies = wait_for(lambda: crm.relay.messages_to(owner.email), what="the error reply")
    assert len(replies) == 1
    reply = email.message_from_bytes(replies[0].content)
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["To"] == owner.email
    assert reply["In-Reply-To"] == msg["Message-ID"]
    assert "Notes to self" in reply["Subject"]
    text = reply.get_payload(decode=True).decode()
    assert "keep the forwarded header block" in text
    assert "no_contact" not in text and owner.email in reply["To"]


def test_error_replies_are_rate_limited_per_user(crm: Crm) -> None:
    owner = crm.new_owner()  # the test server allows 3 replies an hour
    for i in range(5):
        send(
            crm, owner, make_message(from_=owner.email, to=[owner.dropbox["note"]], subject=f"n{i}")
        )
    data = crm.settled(owner.account, count=5)
    statuses = [r["status"] for r in data["replies"]]
    assert len(statuses) == 5
    assert statuses.count("suppressed") == 2
    assert all(s in ("queued", "sent") for s in statuses if s != "suppressed")


def test_the_exclusion_list_keeps_addresses_and_domains_out(crm: Crm) -> None:
    owner = crm.new_owner()
    crm.cli.run("exclusions", "add", owner.account, "info@vendor.example")
    crm.cli.run("exclusions", "add", owner.account, "@internal.example")
    msg = make_message(
        from_=owner.email,
        to=["info@vendor.example", "dev@internal.example", "real@client.example"],
        cc=[owner.dropbox["note"]],
    )
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert note_for(data, msg["Message-ID"])["contacts"] == ["real@client.example"]
    delivery = crm.cli.json("deliveries", "show", str(data["deliveries"][0]["id"]))
    rules = {a["address"]: a["rule"] for a in delivery["plan"]["addresses"]}
    assert rules["info@vendor.example"].startswith("excluded")
    assert rules["dev@internal.example"].startswith("excluded")
    assert rules["real@client.example"] == "contact"


def test_colleagues_addresses_never_become_contacts(crm: Crm) -> None:
    owner = crm.new_owner()
    colleague = crm.new_owner(account=owner.account)
    crm.cli.run("addresses", "add", colleague.email, "colleague.private@gmail.example")
    msg = make_message(
        from_=owner.email,
        to=[colleague.email, "colleague.private@gmail.example", "buyer@client.example"],
    )
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert note_for(data, msg["Message-ID"])["contacts"] == ["buyer@client.example"]
    assert [c["emails"] for c in data["contacts"]] == [["buyer@client.example"]]


def test_a_regenerated_dropbox_refuses_the_old_address_and_takes_the_new(crm: Crm) -> None:
    owner = crm.new_owner()
    fresh = crm.cli.json("dropbox", "regenerate", owner.email, "--json")
    assert fresh["dropbox"]["note"] != owner.dropbox["note"]
    assert set(fresh["dropbox"]) == {"note", "case", "opp", "task", "today", "tomorrow"}
    msg = make_message(from_=owner.email, to=["new@client.example"])
    for old in owner.dropbox.values():
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp_send(crm.smtp, owner.email, [old], msg)
    smtp_send(crm.smtp, owner.email, [fresh["dropbox"]["note"].upper()], msg)
    data = crm.settled(owner.account)
    assert note_for(data, msg["Message-ID"])["contacts"] == ["new@client.example"]


def test_the_same_message_twice_files_one_note(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(from_=owner.email, to=["twice@client.example"])
    send(crm, owner, msg)
    send(crm, owner, msg)
    data = crm.settled(owner.account, count=2)
    assert len(data["notes"]) == 1
    assert sorted(d["status"] for d in data["deliveries"]) == ["duplicate", "filed"]


def test_an_auto_reply_gets_no_error_reply(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(
        from_=owner.email,
        to=[owner.dropbox["note"]],
        subject="Out of office",
        headers={"Auto-Submitted": "auto-replied"},
    )
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert data["deliveries"][0]["status"] == "no_contact"
    assert "no reply" in data["deliveries"][0]["reason"]
    assert data["replies"] == []


def test_an_auto_reply_with_a_contact_from_the_owner_is_still_filed(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(
        from_=owner.email, to=["someone@client.example"], headers={"Auto-Submitted": "auto-replied"}
    )
    send(crm, owner, msg)
    data = crm.settled(owner.account)
    assert note_for(data, msg["Message-ID"])["contacts"] == ["someone@client.example"]


def test_a_message_over_the_size_limit_is_refused_with_552_5_3_4(crm: Crm) -> None:
    owner = crm.new_owner()  # the test server's limit is 1,000,000 bytes
    msg = make_message(from_=owner.email, to=["big@client.example"], body="x" * 80 + "\n")
    msg.add_attachment(b"\0" * 1_100_000, maintype="application", subtype="octet-stream")
    with pytest.raises(smtplib.SMTPException) as refused:
        smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], msg)
    assert "552" in str(refused.value) and "5.3.4" in str(refused.value)
    assert crm.export(owner.account)["deliveries"] == []


def test_too_many_recipients_get_452_4_5_3(crm: Crm) -> None:
    owners = [crm.new_owner() for _ in range(6)]  # the test server allows 5
    msg = make_message(from_=owners[0].email, to=["x@client.example"])
    with smtplib.SMTP("127.0.0.1", crm.smtp) as client:
        client.ehlo()
        client.mail(owners[0].email)
        codes = [client.rcpt(o.dropbox["note"]) for o in owners]
        client.rset()
    assert [c for c, _ in codes[:5]] == [250] * 5
    assert codes[5][0] == 452 and codes[5][1].startswith(b"4.5.3")
    del msg


def test_lmtp_answers_once_per_recipient(crm: Crm) -> None:
    alice = crm.new_owner()
    bob = crm.new_owner()  # another account: alice is not bob's, so bob's dropbox refuses her
    msg = make_message(from_=alice.email, to=["lmtp@client.example"])
    result = lmtp_session(
        crm.lmtp,
        alice.email,
        [alice.dropbox["note"], "dropbox-unknown000000@dropbox.test", bob.dropbox["note"]],
        msg.as_bytes(),
    )
    assert result["rcpt"]["dropbox-unknown000000@dropbox.test"].startswith("550 5.1.1")
    assert result["data"][alice.dropbox["note"]].startswith("250 2.0.0")
    assert result["data"][bob.dropbox["note"]].startswith("550 5.7.1")
    data = crm.settled(alice.account)
    assert note_for(data, msg["Message-ID"])["contacts"] == ["lmtp@client.example"]
    assert [d["status"] for d in crm.export(bob.account)["deliveries"]] == ["rejected"]


def test_two_colleagues_dropboxes_file_the_message_once_for_the_account(crm: Crm) -> None:
    alice = crm.new_owner()
    bob = crm.new_owner(account=alice.account)
    msg = make_message(
        from_=alice.email, to=["shared@client.example"], cc=[alice.dropbox["note"], bob.email]
    )
    smtp_send(crm.smtp, alice.email, [alice.dropbox["note"], bob.dropbox["note"]], msg)
    data = crm.settled(alice.account, count=2)
    assert len(data["notes"]) == 1
    assert sorted(d["status"] for d in data["deliveries"]) == ["duplicate", "filed"]


def test_a_reply_all_is_refused_once_the_owner_turns_reply_all_off(crm: Crm) -> None:
    owner = crm.new_owner()
    crm.cli.run("users", "reply-all", owner.email, "off")
    msg = make_message(from_="carla@partner.example", to=[owner.email], cc=[owner.dropbox["note"]])
    with pytest.raises(smtplib.SMTPDataError) as refused:
        smtp_send(crm.smtp, "carla@partner.example", [owner.dropbox["note"]], msg)
    assert refused.value.smtp_code == 550 and refused.value.smtp_error.startswith(b"5.7.1")
    crm.cli.run("users", "reply-all", owner.email, "on")
    smtp_send(crm.smtp, "carla@partner.example", [owner.dropbox["note"]], msg)
    data = crm.settled(owner.account, count=2)
    assert note_for(data, msg["Message-ID"])["contacts"] == ["carla@partner.example"]


def test_an_error_reply_goes_to_a_verified_address_it_came_from_else_to_signup(
    crm: Crm,
) -> None:
    owner = crm.new_owner()
    tag = owner.email.split("@")[0]
    verified, unverified = f"{tag}.home@mycorp.example", f"{tag}.old@mycorp.example"
    crm.cli.run("addresses", "add", owner.email, verified)
    crm.cli.run("addresses", "add", owner.email, unverified)
    crm.cli.run("addresses", "verify", owner.email, verified)
    for sender in (verified, unverified):
        msg = make_message(from_=sender, to=[owner.dropbox["note"]], subject=f"from {sender}")
        smtp_send(crm.smtp, sender, [owner.dropbox["note"]], msg)
    data = crm.settled(owner.account, count=2)
    assert sorted(r["to"] for r in data["replies"]) == sorted([verified, owner.email])
    wait_for(lambda: crm.relay.messages_to(verified), what="the reply to the verified address")
    assert crm.relay.messages_to(unverified) == []


def test_malformed_mime_is_still_filed_and_its_raw_kept(crm: Crm) -> None:
    owner = crm.new_owner()
    raw = (
        f"From: {owner.email}\r\nTo: Broken Buyer <broken@client.example>\r\n"
        "Subject: =?x-unknown-charset?q?Caf=E9?=\r\nMessage-ID: <broken-1@test.example>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
        "--never-closed\r\nContent-Type: text/plain; charset=no-such-charset\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n!!not base64!!\r\n"
    ).encode()
    smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], raw)
    data = crm.settled(owner.account)
    note = note_for(data, "broken-1@test.example")
    assert note["contacts"] == ["broken@client.example"]
    result = crm.cli.runner.invoke(
        app, ["deliveries", "raw", str(note["delivery_id"])], env=crm.cli.env
    )
    assert result.stdout_bytes == raw


def test_the_service_says_it_is_up_and_sends_visitors_to_sign_in(crm: Crm) -> None:
    page = httpx.get(f"http://127.0.0.1:{crm.server.http_port}/", timeout=10)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    health = httpx.get(f"http://127.0.0.1:{crm.server.http_port}/healthz", timeout=10).json()
    assert health["status"] == "up"


def test_nul_characters_and_overlong_names_are_filed_on_every_backend(crm: Crm) -> None:
    owner = crm.new_owner()
    long_name = "Very Long Name " * 20  # 300 characters: longer than the column
    raw = (
        f"From: {owner.email}\r\n"
        f'To: "{long_name}" <long@client.example>, =?utf-8?q?Nul=00Name?= <nul@client.example>\r\n'
        "Subject: =?utf-8?q?hi=00there?=\r\nMessage-ID: <nul-1@test.example>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        "SGVsbG8AV29ybGQ=\r\n"  # "Hello\\0World"
    ).encode()
    smtp_send(crm.smtp, owner.email, [owner.dropbox["note"]], raw)
    data = crm.settled(owner.account)
    assert [d["status"] for d in data["deliveries"]] == ["filed"], data["deliveries"]
    note = note_for(data, "nul-1@test.example")
    assert note["subject"] == "hithere"
    assert "\x00" not in note["body"] and "Hello" in note["body"]
    assert note["contacts"] == ["long@client.example", "nul@client.example"]
    names = {c["emails"][0]: c["name"] for c in data["contacts"]}
    assert names["long@client.example"] == long_name.strip()[:200]


def test_lmtp_refuses_an_oversized_message_once_per_recipient(crm: Crm) -> None:
    owner = crm.new_owner()  # the test server's limit is 1,000,000 bytes
    msg = make_message(from_=owner.email, to=["big@client.example"])
    msg.add_attachment(b"\0" * 1_100_000, maintype="application", subtype="octet-stream")
    boxes = [owner.dropbox["note"], owner.dropbox["case"]]
    result = lmtp_session(crm.lmtp, owner.email, boxes, msg.as_bytes())
    assert [result["data"][b][:9] for b in boxes] == ["552 5.3.4", "552 5.3.4"]
    assert crm.export(owner.account)["deliveries"] == []


def test_lmtp_offers_pipelining_and_answers_pipelined_commands_in_order(crm: Crm) -> None:
    owner = crm.new_owner()
    msg = make_message(from_=owner.email, to=["piped@client.example"])
    unknown = "dropbox-unknown000000@dropbox.test"
    with socket.create_connection(("127.0.0.1", crm.lmtp), timeout=30) as sock:
        reader = sock.makefile("rb")

        def replies(count: int) -> list[str]:
            out: list[str] = []
            while len(out) < count:
                line = reader.readline().decode().rstrip("\r\n")
                if line[3:4] != "-":
                    out.append(line)
            return out

        assert replies(1)[0].startswith("220")
        sock.sendall(b"LHLO tests.example\r\n")
        lhlo: list[str] = []
        while not lhlo or lhlo[-1][3:4] == "-":
            lhlo.append(reader.readline().decode().rstrip("\r\n"))
        assert "250-PIPELINING" in lhlo
        piped = [f"MAIL FROM:<{owner.email}>", f"RCPT TO:<{unknown}>"]
        piped += [f"RCPT TO:<{owner.dropbox['note']}>", "DATA"]
        sock.sendall("".join(f"{c}\r\n" for c in piped).encode())
        mail, refused, accepted, go_ahead = replies(4)
        assert (mail[:3], refused[:9], accepted[:3], go_ahead[:3]) == (
            "250",
            "550 5.1.1",
            "250",
            "354",
        )
        body = msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert b"\r\n." not in body  # no dot-stuffing needed
        sock.sendall(body.rstrip(b"\r\n") + b"\r\n.\r\nQUIT\r\n")
        assert replies(1)[0].startswith("250 2.0.0")
        assert replies(1)[0].startswith("221")
    data = crm.settled(owner.account)
    assert note_for(data, msg["Message-ID"])["contacts"] == ["piped@client.example"]
