"""The CRM pages over plain HTTP against `crmdrop serve` (SQLite and PostgreSQL): every URL
of another account's object is a 404, bad input is refused with a message and changes
nothing, and a POST without the CSRF token is a 403."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import make_message
from tests.web.conftest import Web
from tests.web.crm_client import Client, tag


@pytest.fixture
def alice(web: Web) -> Iterator[Client]:
    client = Client(web, web.new_user())
    yield client
    client.close()


def _filed(alice: Client) -> dict[str, int]:
    """One email to the case dropbox and one to the today dropbox, filed; their ids."""
    t = tag()
    alice.send(
        make_message(
            from_=alice.user.email,
            to=[f"jane-{t}@client.example"],
            subject="Pump offer",
            attachments=[("offer.pdf", b"%PDF offer")],
        ),
        "case",
    )
    alice.send(
        make_message(from_=alice.user.email, to=[f"jane-{t}@client.example"], subject="Call"),
        "today", settle=2,
    )  # fmt: skip
    data = alice.export()
    note = next(n for n in data["notes"] if n["subject"] == "Pump offer")
    page = alice.get(f"/contacts/{data['contacts'][0]['id']}").text
    attachment = int(page.split('href="/attachments/')[1].split('"')[0])
    return {
        "contact": data["contacts"][0]["id"],
        "note": note["id"],
        "delivery": note["delivery_id"],
        "task": data["tasks"][0]["id"],
        "case": int(data["cases"][0]["ref"][2:]),
        "attachment": attachment,
    }


def test_another_account_gets_404_for_every_url_of_the_first(web: Web, alice: Client) -> None:
    ids = _filed(alice)
    urls = [
        f"/contacts/{ids['contact']}",
        f"/notes/{ids['note']}/original",
        f"/attachments/{ids['attachment']}",
        f"/activity/{ids['delivery']}",
        f"/activity/{ids['delivery']}/raw",
        f"/cases/{ids['case']}",
    ]
    for url in urls:
        assert alice.get(url).status_code == 200, url
    mallory = Client(web, web.new_user())
    try:
        for url in urls:
            assert mallory.get(url).status_code == 404, url
        posts = [
            (f"/contacts/{ids['contact']}/edit", {"name": "X", "emails": "x@y.example"}),
            (f"/contacts/{ids['contact']}/delete", {}),
            (f"/contacts/{ids['contact']}/merge", {"other": str(ids["contact"] + 1)}),
            (f"/cases/{ids['case']}", {"title": "Mine", "status": "closed"}),
            (f"/tasks/{ids['task']}/done", {}),
            (f"/activity/{ids['delivery']}/undo", {}),
            (f"/activity/{ids['delivery']}/retry", {}),
        ]
        for url, data in posts:
            assert mallory.post(url, **data).status_code == 404, url
        assert "Pump offer" not in mallory.get("/activity").text
    finally:
        mallory.close()
    after = alice.export()
    assert [c["ref"] for c in after["cases"]] == [f"CA{ids['case']}"]
    assert after["cases"][0]["status"] == "open" and len(after["notes"]) == 2


def test_bad_input_is_refused_with_a_message_and_changes_nothing(alice: Client) -> None:
    ids = _filed(alice)
    contact, case = ids["contact"], ids["case"]
    before = alice.export()
    refused = {
        f"/contacts/{contact}/merge": ({"other": str(contact)}, "cannot be merged with itself"),
        f"/cases/{case}": ({"title": "Pump", "status": "won"}, "is not a case status"),
        f"/contacts/{contact}/edit": ({"name": "J", "emails": "not-an-address"}, "not a valid"),
    }
    for url, (data, message) in refused.items():
        assert message in alice.flash(alice.post(url, **data)), url
    assert "no contact has the address" in alice.flash(
        alice.post(f"/contacts/{contact}/merge", other="nobody@nowhere.example")
    )
    assert alice.export()["contacts"] == before["contacts"]
    assert alice.export()["cases"] == before["cases"]
    assert alice.get("/activity?status=bogus").status_code == 400
    assert alice.get("/cases?status=won").status_code == 400
    assert alice.get("/contacts?after=garbage").status_code == 400
    # Deleted meanwhile: a second tab's form on a contact that is gone is a 404.
    assert alice.post(f"/contacts/{contact}/delete").status_code == 303
    assert alice.post(f"/contacts/{contact}/edit", name="J", emails="").status_code == 404
    assert alice.get(f"/contacts/{contact}").status_code == 404


def test_a_post_without_the_csrf_token_is_403_and_changes_nothing(alice: Client) -> None:
    ids = _filed(alice)
    for url, data in (
        (f"/contacts/{ids['contact']}/delete", {}),
        (f"/tasks/{ids['task']}/done", {}),
        (f"/activity/{ids['delivery']}/undo", {}),
    ):
        assert alice.post(url, csrf=False, **data).status_code == 403, url
    data = alice.export()
    assert len(data["contacts"]) == 1 and len(data["notes"]) == 2
    assert alice.get("/tasks").text.count('action="/tasks/') == 1
    assert [d["status"] for d in data["deliveries"]] == ["filed", "filed"]


def test_never_a_contact_is_for_admins_and_offers_to_delete_the_contact(
    web: Web, alice: Client
) -> None:
    t = tag()
    alice.send(
        make_message(from_=alice.user.email, to=[f"info-{t}@noise.example"], subject="Noise"),
        settle=1,
    )
    data = alice.export()
    delivery, contact = data["deliveries"][0]["id"], data["contacts"][0]["id"]
    member = Client(web, web.new_user(account=alice.user.account))
    try:
        refused = member.post(f"/activity/{delivery}/never", address=f"info-{t}@noise.example")
        assert "Only an admin" in member.flash(refused)
    finally:
        member.close()
    done = alice.post(
        f"/activity/{delivery}/never", address=f"info-{t}@noise.example", scope="domain"
    )
    assert done.status_code == 303
    page = alice.get(done.headers["location"]).text
    assert "@noise.example is on the exclusion list" in page
    assert "Delete it too?" in page
    alice.post(f"/activity/{delivery}/delete-contact", contact_id=str(contact))
    assert alice.export()["contacts"] == []
    assert "never contact" in alice.get(f"/activity/{delivery}").text


def test_the_contact_page_shows_a_forwarded_thread_as_a_conversation(alice: Client) -> None:
    from tests.test_forward_matrix import THREAD

    alice.send(
        make_message(
            from_=alice.user.email, to=["someone@elsewhere.example"], subject="Fwd: Re: Offer",
            body=THREAD,
        )
    )  # fmt: skip
    data = alice.web.crm.settled(alice.user.account, 1, timeout=90)
    paul = next(c for c in data["contacts"] if "paul@vendor.example" in c["emails"])
    page = alice.get(f"/contacts/{paul['id']}").text
    assert "Conversation: 2 messages, newest first" in page
    newest, older = page.index("Yes, we accept."), page.index("Here is our offer.")
    assert newest < older  # newest first
    assert "Paul Older" in page and "Carla Copy" in page  # the older author; the Cc
